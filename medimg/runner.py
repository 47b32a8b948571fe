"""Making the runs of a plan: what this machine cannot make (recorded, said once), the
estimated duration of the rest, and each run as its script in a subprocess with its log.
(The GPU lease's workers make several runs in one process instead: ``tools/lease.py``.)"""
import datetime
import json
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Optional

import torch
from tqdm import tqdm

from medimg import preflight
from medimg.execution import AMP_DTYPES, pick_device
from medimg.execution import from_args as execution_from_args
from medimg.runfiles import write_json
from medimg.workloads import Workload

ROOT = Path(__file__).resolve().parent.parent  # where the scripts are
COMPLETE_MARKERS = ("results.json", "convolution_timings.json")  # a run folder holding one is a finished run


def seed_copy_panel(folder_name: str, file_name: str) -> bool:
    """Whether a run's file is a seed copy's (``NAME_seedS``) panel of test predictions, which
    the runs kept (committed, packed by a GPU lease) leave out: the first seed's shows the
    configuration, and the report draws its panels from every run's example masks."""
    return file_name == "predictions.png" and "_seed" in folder_name


def command(script, arguments, logdir, out_flag):
    return [sys.executable, str(ROOT / script), *arguments, out_flag, str(logdir)]


def status(logdir):
    if any((Path(logdir) / name).exists() for name in COMPLETE_MARKERS):
        return "complete"
    if (Path(logdir) / "checkpoint.pt").exists():
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


# the options that make a run's setting: a committed run that differs in one of them is another experiment
SETTING = ("model", "image_size", "crop_size", "val_fraction", "train_fraction", "epochs", "augmentation",
           "final_weights", "optimizer", "lr")


def other_setting(logdir, script, arguments):
    """How the complete segmentation run in ``logdir`` differs from the one ``arguments`` plan
    ("image_size 0, planned 256"), or None (the same, or not a segmentation run). Options its
    results.json does not record (added since) are not compared."""
    path = Path(logdir) / "results.json"
    if script != "main_segmentation.py" or not path.exists():
        return None
    from medimg.options import parse_segmentation_args
    planned = vars(parse_segmentation_args([*arguments, "--logdir", str(logdir)]))
    made = json.loads(path.read_text()).get("config", {})
    differs = [f"{key} {made[key]}, planned {planned[key]}" for key in SETTING
               if key in made and made[key] != planned[key]]
    return "; ".join(differs) or None


def check_and_estimate(selected, root, profile, estimate=True):
    """Say once which runs this machine cannot make (and record them), and which lack the
    dataset (said only: the user supplies it), then the estimated duration of every other run
    and of the plan. Returns the runs to make, and the reason of each run that cannot be made
    here (the runs without their dataset are in neither)."""
    todo = {name: run for name, run in selected.items() if status(root / name) != "complete"}
    stale = {name: other_setting(root / name, *run) for name, run in selected.items() if name not in todo}
    stale = {name: why for name, why in stale.items() if why}
    if stale:  # kept, as every complete run is, but said: the plan does not make them again
        first = next(iter(stale))
        print(f"kept ({len(stale)}), made in another setting than planned: {', '.join(stale)} (e.g. {first}: "
              f"{stale[first]}); move them out of {root} to make them as planned")
    absent = {}
    for name, (script, arguments) in list(todo.items()):
        reason = preflight.absent_dataset(script, arguments)
        if reason:
            absent.setdefault(reason, []).append(name)
            del todo[name]
    for reason, names in absent.items():
        print(f"not run ({len(names)}): {', '.join(names)}: {reason}")
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
    device = pick_device("auto")
    total, per_run = estimate_plan(todo, device, progress=True)
    for name, seconds in per_run.items():
        print(f"  {name:<26} about {preflight.hours(seconds)}")
    where = torch.cuda.get_device_name(0) if device.type == "cuda" else f"this CPU ({torch.get_num_threads()} threads)"
    print(f"the plan: {len(todo)} run(s), about {preflight.hours(total)} on {where} (estimated from measured steps)")
    if total > 3 * 3600:
        print("that is longer than a few hours here: a CUDA GPU runs it far faster (--profile gpu there), or "
              "select runs with --only NAME ...")
    return todo, not_run


def workload(script, arguments):
    """The training step a run times to choose its execution (``medimg.workloads.Workload``,
    as the script builds it), or None for the convolution study, which has none."""
    if script == "convolution.py":
        return None
    args = preflight._args(script, arguments)
    if script == "main_classification.py":
        return Workload.of_classification(args)
    return Workload.of_segmentation(args, args.crop_size or args.image_size or 512)  # as preflight.step_seconds


def measurement_key(script, arguments):
    """What runs share one measured step: the workload's name (what the execution choice is
    remembered under) and the execution flags; None for the convolution study. Runs that
    differ only in what a step does not see (seed, learning rate, augmentation,
    ``--show_augmentations``) share it."""
    step = workload(script, arguments)
    if step is None:
        return None
    args = preflight._args(script, arguments)
    return step.name, args.plain, args.amp, args.channels_last


def estimate_plan(todo, device, progress=False, on_measured=None):
    """``(total, per_run)``: the estimated seconds of the plan made one run at a time and of
    each run (``preflight.estimate_seconds``), from one training step measured on ``device``
    for each distinct workload (``measurement_key``). The measurement is the scripts' own
    (``preflight.step_seconds``), so it is remembered and the runs then start at once.
    ``on_measured(workload_name, seconds)`` is told of each measurement."""
    step, per_run = {}, {}
    for name, (script, arguments) in tqdm(todo.items(), desc="measuring step times", leave=False,
                                          disable=not progress):
        key = measurement_key(script, arguments)
        if key is not None and key not in step:
            step[key] = preflight.step_seconds(script, arguments, device) or 0.0
            if on_measured is not None:
                on_measured(key[0], step[key])
        per_run[name] = preflight.estimate_seconds(script, arguments, step.get(key, 0.0))
    return sum(per_run.values()), per_run


AMP_FLAG = {dtype: flag for flag, dtype in AMP_DTYPES.items()}  # torch.bfloat16 -> "bf16", None -> "off"


def fixed_execution(script: str, arguments: list, device: torch.device, threads: Optional[int] = None) -> list:
    """The flags that make a run use exactly the execution chosen for its workload on this
    machine with ``threads`` threads (measured now, or remembered from an earlier measurement
    with as many threads: the thread count is part of what a choice is remembered by): the
    chosen candidate's ``--amp`` and ``--channels_last``, which leave the run that one
    candidate, so it neither measures nor doubts the choice by its own step time (workers
    time-slicing one GPU each see slower steps than the measurement). [] for the convolution
    study and ``--plain`` runs, which measure nothing. ``threads``: the CPU threads each run
    will have (runs side by side), measured with that many."""
    step = workload(script, arguments)
    if step is None:
        return []
    args = preflight._args(script, arguments)
    if args.plain:
        return []
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads or before)
        with torch.random.fork_rng():
            chosen, _ = execution_from_args(args, device, step.name, step.step_maker())
    finally:
        torch.set_num_threads(before)
    return ["--amp", AMP_FLAG[chosen.amp_dtype], "--channels_last", "on" if chosen.channels_last else "off"]


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


def make_runs(todo, root, jobs, description):
    """Make the runs, ``jobs`` at a time, spread round-robin over the visible GPUs, with a
    progress bar over the plan. Returns each run's final state."""
    gpus = torch.cuda.device_count()
    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None
    if threads is not None and not gpus:  # runs sharing the CPU: each its measured execution, fixed
        todo = {name: (script, [*arguments, *fixed_execution(script, arguments, torch.device("cpu"), threads)])
                for name, (script, arguments) in todo.items()}
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
