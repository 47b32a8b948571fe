"""Making the runs of a plan: what this machine cannot make (recorded, said once), the
estimated duration of the rest, and each run as its script in a subprocess with its log."""
import datetime
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import torch
from tqdm import tqdm

from medimg import preflight
from medimg.execution import pick_device
from medimg.runfiles import write_json

ROOT = Path(__file__).resolve().parent.parent  # where the scripts are


def command(script, arguments, logdir, out_flag):
    return [sys.executable, str(ROOT / script), *arguments, out_flag, str(logdir)]


def status(logdir):
    if (logdir / "results.json").exists() or (logdir / "convolution_timings.json").exists():
        return "complete"
    if (logdir / "checkpoint.pt").exists():
        return "interrupted"
    return "new"


def record_not_run(logdir, script, arguments, reason):
    """``not_run.json``: why this machine could not make the run, and the command that fills it.
    A record that is there already is kept: the run is still not made, and a reason that
    differs here (no data, no network) is this machine's, said on the console instead of
    rewriting a committed record (and its date) on every invocation."""
    if (Path(logdir) / "not_run.json").exists():
        return "not run: " + reason
    write_json(Path(logdir) / "not_run.json", {
        "status": "not run", "reason": reason, "command": shlex.join(["python", script, *arguments]),
        "date": datetime.datetime.now().isoformat(timespec="seconds")})
    return "not run: " + reason


def check_and_estimate(selected, root, profile, estimate=True):
    """Say once which runs this machine cannot make (and record them), then the estimated
    duration of every other run and of the plan. Returns the runs to make, and the reason
    of each run that cannot be made here."""
    todo = {name: run for name, run in selected.items() if status(root / name) != "complete"}
    reasons = {}
    for name, (script, arguments) in todo.items():
        reason = preflight.missing(script, arguments, profile)
        if reason:
            reasons.setdefault(reason, []).append(name)
    for reason, names in reasons.items():
        print(f"not run ({len(names)}): {', '.join(names)}: {reason}")
        for name in names:
            script, arguments = todo.pop(name)
            out_flag = "--out" if script == "convolution.py" else "--logdir"
            record_not_run(root / name, script, [*arguments, out_flag, str(root / name)], reason)
    not_run = {name: reason for reason, names in reasons.items() for name in names}
    if not estimate or not todo:
        return todo, not_run
    device, per_workload, total = pick_device("auto"), {}, 0.0
    for name, (script, arguments) in tqdm(todo.items(), desc="measuring step times", leave=False):
        key = (script, tuple(a for a in arguments if a not in ("--show_augmentations",)))
        if script != "convolution.py" and key not in per_workload:
            per_workload[key] = preflight.step_seconds(script, arguments, device)
        seconds = preflight.estimate_seconds(script, arguments, per_workload.get(key) or 0.0)
        total += seconds
        print(f"  {name:<26} about {preflight.hours(seconds)}")
    where = torch.cuda.get_device_name(0) if device.type == "cuda" else f"this CPU ({torch.get_num_threads()} threads)"
    print(f"the plan: {len(todo)} run(s), about {preflight.hours(total)} on {where} (estimated from measured steps)")
    if total > 3 * 3600:
        print("that is longer than a few hours here: a CUDA GPU runs it far faster (--profile gpu there), or "
              "select runs with --only NAME ...")
    return todo, not_run


def run_one(name, script, arguments, logdir, gpu=None, threads=None):
    """Run one experiment, its output going to ``logdir/log.txt``, on GPU number ``gpu``
    and with ``threads`` CPU threads when given. Returns its state."""
    out_flag = "--out" if script == "convolution.py" else "--logdir"
    state = status(logdir)
    if state == "complete":
        return "complete (skipped)"
    cmd = command(script, arguments, logdir, out_flag)
    if state == "interrupted":
        cmd.append("--resume")
    logdir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, TQDM_MININTERVAL="30", PYTHONUNBUFFERED="1")
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
    if threads is not None:  # runs side by side share the cores instead of each taking them all
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    started = time.time()
    with open(logdir / "log.txt", "a") as log:
        log.write(f"\n$ {shlex.join(cmd)}   # {datetime.datetime.now().isoformat(timespec='seconds')}\n")
        log.flush()
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    if proc.returncode == 2:  # a one-line UserError: this machine cannot make the run
        reason = [l for l in (logdir / "log.txt").read_text().splitlines() if l.startswith("error:")][-1:]
        return record_not_run(logdir, script, cmd[2:], reason[0][len("error: "):] if reason else "see log.txt")
    if proc.returncode != 0:
        return f"failed (exit {proc.returncode}, see {logdir / 'log.txt'})"
    (logdir / "not_run.json").unlink(missing_ok=True)
    return f"done in {(time.time() - started) / 60:.1f} min"


IN_PROCESS = {"main_segmentation.py", "main_classification.py"}  # scripts whose main(argv) leaves no global state


def run_in_process(name: str, script: str, arguments: list, logdir: Path) -> str:
    """``run_one`` without the start-up: the script's ``main(argv)`` called in this process
    (imports, decoded data and the remembered execution choice stay for the next run),
    its output going to ``logdir/log.txt``. The run writes exactly what ``run_one``'s
    would; scripts that set process-wide state (the convolution study pins the threads)
    still get a process of their own. Returns the run's state, as ``run_one``."""
    import contextlib
    import importlib
    import traceback

    from medimg.cli import UserError
    if script not in IN_PROCESS:
        return run_one(name, script, arguments, logdir)
    state = status(logdir)
    if state == "complete":
        return "complete (skipped)"
    argv = [*arguments, "--logdir", str(logdir), *(["--resume"] if state == "interrupted" else [])]
    logdir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    with open(logdir / "log.txt", "a", buffering=1) as log, \
            contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        log.write(f"\n$ {shlex.join(['python', script, *argv])}   "
                  f"# {datetime.datetime.now().isoformat(timespec='seconds')}, in a multi-run process\n")
        try:
            importlib.import_module(Path(script).stem).main(argv)
        except UserError as err:  # one line: this machine cannot make the run
            print(f"error: {err}")
            return record_not_run(logdir, script, argv, str(err))
        except Exception as err:  # the run failed; the process goes on to the next one
            traceback.print_exc()
            return f"failed ({err.__class__.__name__}, see {logdir / 'log.txt'})"
        finally:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()  # the next run's memory, not this one's cached blocks
    (logdir / "not_run.json").unlink(missing_ok=True)
    return f"done in {(time.time() - started) / 60:.1f} min"


def make_runs(todo, root, jobs, description):
    """Make the runs, ``jobs`` at a time, spread round-robin over the visible GPUs, with a
    progress bar over the plan. Returns each run's final state."""
    gpus = torch.cuda.device_count()
    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None
    states = {}
    with ThreadPoolExecutor(max_workers=jobs) as pool, tqdm(total=len(todo), desc=description,
                                                            dynamic_ncols=True) as progress:
        futures = {pool.submit(run_one, name, script, arguments, root / name,
                               i % gpus if gpus > 1 else None, threads): name
                   for i, (name, (script, arguments)) in enumerate(todo.items())}
        for future in as_completed(futures):
            name = futures[future]
            states[name] = future.result()
            tqdm.write(f"{name}: {states[name]}")
            progress.update()
    return states
