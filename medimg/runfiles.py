"""A run's files: its folder (never overwriting a finished run), crash-safe JSON,
the checkpoint that lets an interrupted run continue exactly (weights, optimizer,
random streams, progress), and the record that makes a run reproducible and
judgeable (command, configuration, machine, versions, commit)."""
import ast
import datetime
import hashlib
import json
import os
import random
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from medimg.cli import UserError
from medimg.machine import library_versions, machine_info


def project_version():
    """The project's git commit (with '+changes' when the work tree differs), or None."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True,
                                text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (commit + ("+changes" if dirty else "")) or None


PROJECT = Path(__file__).resolve().parent.parent  # the checkout: the scripts, medimg/, the graded files


def imported_project_files(script, project=PROJECT):
    """The project's Python files that ``script`` imports, directly or through each other, as
    paths relative to ``project``: every ``import`` statement of each file (those inside
    functions too) that names a module of the checkout, found by reading the files, not by
    asking this process, which may have imported more (a test, a lease worker). Files under
    ``tests/`` and in hidden folders (``.venv``) are not the project's code."""
    def module_files(dotted):
        parts = dotted.split(".")
        found = []
        for i in range(1, len(parts) + 1):  # a.b.c: a/__init__.py, a/b/__init__.py, a/b/c.py or a/b/c/__init__.py
            base = project.joinpath(*parts[:i])
            found += [f for f in (base.with_suffix(".py"), base / "__init__.py") if f.is_file()]
        return found

    todo, seen = [Path(script).resolve()], set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for node in ast.walk(ast.parse(path.read_bytes(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            todo += [f for name in names for f in module_files(name) if f not in seen]
    relative = [p.relative_to(project) for p in seen if project in p.parents]
    return sorted(r.as_posix() for r in relative
                  if r.parts[0] != "tests" and not any(part.startswith(".") for part in r.parts))


def code_fingerprint(script, project=PROJECT):
    """What code trained a run: the SHA-256 of the project files ``script`` imports
    (``imported_project_files``; each path with its contents) and their list. Uncommitted
    edits change it and edits to files the script never imports do not, so runs with the
    same fingerprint were made by the same code."""
    files = imported_project_files(script, project)
    digest = hashlib.sha256()
    for relative in files:
        digest.update(relative.encode() + b"\0" + (project / relative).read_bytes() + b"\0")
    return {"sha256": digest.hexdigest(), "files": files}


def check_resumable(logdir, code):
    """Refuse, in one line and before anything is touched, to resume the run in ``logdir`` with
    code other than the one that trained its checkpoint's epochs (``code``: this process's
    ``code_fingerprint``): its results.json will record one fingerprint."""
    checkpoint = Path(logdir) / "checkpoint.pt"
    if not checkpoint.exists():
        return
    made_by = load_checkpoint(checkpoint, mmap=True).get("code")  # mapped: the weights stay on disk
    if made_by != code["sha256"]:
        raise UserError(f"{checkpoint}: its epochs were trained by other code (fingerprint "
                        f"{(made_by or 'none recorded')[:12]}, this code's {code['sha256'][:12]}); resume it "
                        f"with that code, or delete the folder to start afresh")


def run_record(script, argv, args, device, *libraries, code=None):
    """Everything needed to reproduce and judge a run, stored in its results.json.
    ``argv``: the script's arguments (None: this process's command line); ``code``: its
    ``code_fingerprint``, when already taken."""
    argv = sys.argv[1:] if argv is None else argv
    return {
        "command": shlex.join(["python", Path(script).name, *argv]),
        "config": {k: v for k, v in vars(args).items()},
        "machine": machine_info(device),
        "versions": library_versions(*libraries),
        "project_version": project_version(),
        "code_fingerprint": code or code_fingerprint(script),
        "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def atomic_write(path, write):
    """Write through a temporary file in the same folder, then rename: a crash never
    leaves a half-written file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes files private; results are ordinary files
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path, obj):
    """Atomic JSON; NaN and infinities (which JSON lacks) are stored as null."""
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(_finite(obj), f, indent=2, allow_nan=False, default=_json_default)
            f.write("\n")
    atomic_write(path, write)


def _finite(obj):
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        return obj.tolist()
    if isinstance(obj, (Path, torch.device, torch.dtype)):
        return str(obj)
    raise TypeError(f"cannot store {type(obj).__name__} in JSON")


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: cannot read it as JSON ({err}); delete it or point to another file")


def prepare_logdir(logdir, resume, create=True):
    """Check ``logdir`` (and create it unless ``create`` is False: a script creates it only
    once its inputs are known to be good); refuse to overwrite a finished run, and tell
    how to go on."""
    logdir = Path(logdir)
    if logdir.exists() and not logdir.is_dir():
        raise UserError(f"--logdir {logdir} is a file, not a folder; choose another path")
    results, checkpoint = logdir / "results.json", logdir / "checkpoint.pt"
    if not resume and (results.exists() or checkpoint.exists()):
        raise UserError(f"{logdir} already holds a run; pass --resume to continue it, "
                        f"or choose a new --logdir")
    if create:
        logdir.mkdir(parents=True, exist_ok=True)
    return logdir


def run_folder(logdir, resume):
    """The checked (not yet created) folder of a run about to start, or None when
    ``--resume`` finds that run already complete (there is nothing to do)."""
    logdir = prepare_logdir(logdir, resume, create=False)
    if resume and finished(logdir):
        print(f"{logdir}: the run is already complete; nothing to do")
        return None
    return logdir


def finished(logdir):
    """A run whose results are written and that has nothing left to resume."""
    return (Path(logdir) / "results.json").exists() and not (Path(logdir) / "checkpoint.pt").exists()


def save_training_state(path, parts, shuffle_rng, **progress):
    """Checkpoint everything a resumed run needs to continue exactly: the state dicts of
    ``parts`` (model, optimizer, ...), the random streams, and ``progress`` (epoch, history)."""
    save_checkpoint(path, **{name: part.state_dict() for name, part in parts.items()}, rng=rng_state(),
                    shuffle_rng=shuffle_rng.get_state(), **progress)


def load_training_state(path, parts, shuffle_rng):
    """Restore what :func:`save_training_state` saved; returns the checkpoint (for its progress)."""
    state = load_checkpoint(path)
    for name, part in parts.items():
        if name in state:  # older checkpoints lack the scaler and scheduler
            part.load_state_dict(state[name])
    set_rng_state(state["rng"])
    shuffle_rng.set_state(state["shuffle_rng"])
    return state


def save_checkpoint(path, **state):
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path, mmap=False):
    try:
        return torch.load(path, map_location="cpu", mmap=mmap, weights_only=False)
    except Exception as err:
        raise UserError(f"{path}: cannot load the checkpoint ({err}); delete it to start the run afresh")


def rng_state():
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state):
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
