"""
Every run the report needs, by name, in two profiles:

- ``gpu``: the assignment's hyperparameters exactly (15 classification epochs, 40
  segmentation epochs on whole 512x512 images, the template's batch sizes).
- ``cpu``: scaled to finish in about three hours on a two-core CPU (random crops,
  fewer epochs, a PathMNIST subset); every scaling is visible in the run's command
  and stored in its results.json.

    python experiments.py --profile cpu --data ../shared/data/retina     # run them all
    python experiments.py --profile gpu --list                           # one shell command per run
    python experiments.py --profile cpu --only unet unet_noskip          # a selection

Outputs go to ``runs/<profile>/<name>/``. A finished run (its results.json exists) is
skipped and an interrupted one resumed. A run that cannot be made on this machine (no
PathMNIST file, no ImageNet weights offline) is recorded in ``not_run.json`` with the
reason and the command that fills it; nothing is ever faked.
"""
import argparse
import datetime
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from cli import UserError, run_cli
from runfiles import read_json, write_json

LEARNING_RATES = ("1e-1", "1e-2", "1e-3", "1e-4", "1e-5")

PROFILES = {
    # The assignment's hyperparameters (the scripts' defaults), nothing scaled.
    "gpu": {
        "classification": [],
        "segmentation": [],
        "reference_unet": [],
        "long_unet": ["--lr_schedule", "cosine"],
        "convolution": [],
    },
    # Two CPU cores, under two hours in all. Segmentation: 128-px random crops, batch 8, four
    # crops of each training image per epoch (an epoch sees a quarter of the pixels of a
    # full-image epoch), 10 epochs (40 for the reference UNet, whose first 10 epochs are those
    # of a 10-epoch run: same seed, no schedule), evaluation on the whole 512-px test images
    # every second epoch; lr 1e-3, since at 1e-4 the UNet does not leave its all-background
    # plateau within this budget (the learning-rate sweep shows it). Classification: a subset.
    "cpu": {
        "classification": ["--subset", "20000", "--epochs", "5"],
        "segmentation": ["--crop_size", "128", "--batch_size", "8", "--crops_per_image", "4",
                         "--epochs", "10", "--eval_every", "2", "--lr", "1e-3"],
        "reference_unet": ["--epochs", "40"],
        "long_unet": ["--epochs", "30", "--lr_schedule", "cosine"],
        "convolution": [],
    },
}


@dataclass(frozen=True)
class Run:
    """One run of the report: the question it answers, its script, and its own arguments
    (which come after the profile's, so they override them)."""
    name: str
    problem: str
    script: str
    arguments: tuple = ()
    label: str = ""


def registry(profile="cpu"):
    """Every run of the report, in the order they are made. The only list of runs: the
    report, the SLURM array (through --list) and the tests read it."""
    from retina import STRATEGIES  # the augmentation strategies are the ones the code builds
    p = PROFILES[profile]
    seg, cls = "main_segmentation.py", "main_classification.py"
    lite0 = ("--model", "smp_unet", "--encoder", "efficientnet-lite0")
    # a quarter of the training eyes, four times the crops of each: the same number of steps
    quarter = ("--train_fraction", "0.25", "--crops_per_image", str(4 * _crops_per_image(p)))
    runs = [
        Run("convolution", "2.1", "convolution.py", tuple(p["convolution"]), "convolution study"),
        Run("unet", "4", seg, ("--model", "unet", *p["reference_unet"]), "UNet (skip connections)"),
        Run("unet_noskip", "4.1", seg, ("--model", "unet_noskip"), "UNet without skip connections"),
        *[Run(f"lr_{lr}", "4.2", seg, ("--model", "unet", "--optimizer", "adam", "--lr", lr), f"Adam, lr {lr}")
          for lr in LEARNING_RATES],
        # aug_none is the comparison's own baseline (the same length as the others, seeds alike);
        # the elastic run also draws the examples of every strategy (--show_augmentations)
        *[Run(f"aug_{name}", "4.3", seg, ("--model", "unet", "--augmentation", name,
                                          *(("--show_augmentations", "4") if name == "elastic" else ())), name)
          for name in STRATEGIES],
        Run("smp_pretrained", "4.4", seg, (*lite0, "--encoder_weights", "imagenet"),
            "smp EfficientNet-Lite0 UNet, ImageNet encoder"),
        Run("smp_scratch", "4.4", seg, (*lite0, "--encoder_weights", "none"),
            "smp EfficientNet-Lite0 UNet, from scratch"),
        Run("smp_pretrained_quarter", "4.4", seg, (*lite0, "--encoder_weights", "imagenet", *quarter),
            "ImageNet encoder, a quarter of the eyes"),
        Run("smp_scratch_quarter", "4.4", seg, (*lite0, "--encoder_weights", "none", *quarter),
            "from scratch, a quarter of the eyes"),
        # the assignment's suggestion, where its ImageNet weights can be downloaded
        Run("smp_resnet18_pretrained", "4.4", seg, ("--model", "smp_unet", "--encoder", "resnet18",
                                                    "--encoder_weights", "imagenet"),
            "smp ResNet-18 UNet, ImageNet encoder"),
        Run("smp_resnet18_scratch", "4.4", seg, ("--model", "smp_unet", "--encoder", "resnet18",
                                                 "--encoder_weights", "none"),
            "smp ResNet-18 UNet, from scratch"),
        # the best recipe we found for the budget: the reference UNet with a cosine learning-rate decay
        Run("unet_cosine", "4", seg, ("--model", "unet", *p["long_unet"]), "UNet, cosine lr decay"),
        Run("mlp", "2.6", cls, ("--model", "mlp"), "MLP"),
        Run("mobilenet", "2.6", cls, ("--model", "mobilenet"), "MobileNet"),
        # the template's literal behaviour: cross-entropy on MobileNet's softmax probabilities
        Run("mobilenet_probs", "2.6", cls, ("--model", "mobilenet", "--loss_on_probabilities"),
            "MobileNet, loss on probabilities"),
    ]
    return {run.name: run for run in runs}


def _crops_per_image(profile):
    args = profile["segmentation"]
    return int(args[args.index("--crops_per_image") + 1]) if "--crops_per_image" in args else 1


def runs_of(problem, profile="cpu"):
    """The names of the runs that answer ``problem`` (e.g. "4.2"), in registry order."""
    return [name for name, run in registry(profile).items() if run.problem == problem]


# --dry_run: every run of the plan, made tiny, to check on any machine that the plan works
DRY_RUN = {"main_segmentation.py": ["--epochs", "1", "--image_size", "64", "--crop_size", "0", "--batch_size", "2",
                                    "--eval_every", "1", "--train_fraction", "0.25"],
           "main_classification.py": ["--epochs", "1", "--subset", "64"],
           "convolution.py": ["--quick"]}


def plan(profile, data, data_dir, seeds=(), dry_run=False):
    """The runs of a profile, in the order they are made: name -> (script, arguments).
    A run's own arguments come last, so they override the profile's. ``seeds`` adds a copy
    of every Problem 4 run for each other seed (``NAME_seedS``); ``dry_run`` shrinks every run."""
    p = PROFILES[profile]
    common = {"main_segmentation.py": ["--dataset", data, *p["segmentation"]],
              "main_classification.py": ["--data_dir", data_dir, *p["classification"]],
              "convolution.py": []}
    runs = {}
    for name, run in registry(profile).items():
        arguments = merge(common[run.script], run.arguments)
        copies = [(name, [])] + [(f"{name}_seed{s}", ["--seed", str(s)]) for s in seeds
                                 if run.problem.startswith("4")]
        for copy_name, seed in copies:
            runs[copy_name] = (run.script, merge(arguments, [*seed, *(DRY_RUN[run.script] if dry_run else [])]))
    return runs


def merge(base, own):
    """``base`` then ``own``, without the options of ``base`` that ``own`` sets again, so a
    command never says ``--epochs 10 ... --epochs 40``."""
    overridden = {a for a in own if a.startswith("--")}
    kept, skip = [], False
    for i, a in enumerate(base):
        if skip:
            skip = False
            continue
        if a in overridden:
            skip = i + 1 < len(base) and not base[i + 1].startswith("--")
            continue
        kept.append(a)
    return [*kept, *own]


def command(script, arguments, logdir, out_flag):
    return [sys.executable, str(Path(__file__).resolve().parent / script), *arguments, out_flag, str(logdir)]


def status(logdir):
    if (logdir / "results.json").exists() or (logdir / "convolution_timings.json").exists():
        return "complete"
    if (logdir / "checkpoint.pt").exists():
        return "interrupted"
    return "new"


def record_not_run(logdir, script, arguments, reason):
    """``not_run.json``: why this machine could not make the run, and the command that fills it."""
    write_json(Path(logdir) / "not_run.json", {
        "status": "not run", "reason": reason, "command": shlex.join(["python", script, *arguments]),
        "date": datetime.datetime.now().isoformat(timespec="seconds")})
    return "not run: " + reason


def check_and_estimate(selected, root, profile, estimate=True):
    """Say once which runs this machine cannot make (and record them), then the estimated
    duration of every other run and of the plan. Returns the runs to make, and the reason
    of each run that cannot be made here."""
    import preflight
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
    import torch
    from execution import pick_device
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


def make_runs(todo, root, jobs, description):
    """Make the runs, ``jobs`` at a time, spread round-robin over the visible GPUs, with a
    progress bar over the plan. Returns each run's final state."""
    import torch
    from concurrent.futures import ThreadPoolExecutor, as_completed
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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=sorted(PROFILES), default="cpu")
    parser.add_argument("--data", default="data/retina", help="the retina folder (train/ and test/)")
    parser.add_argument("--data_dir", default="data", help="the PathMNIST root (pathmnist.npz)")
    parser.add_argument("--runs", default="runs", help="where runs/<profile>/<name>/ go")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these")
    parser.add_argument("--list", action="store_true", help="print one shell command per run and exit")
    parser.add_argument("--estimate", action="store_true",
                        help="check what the runs need and estimate their durations on this machine, then exit")
    parser.add_argument("--no_estimate", action="store_true", help="start at once, without measuring step times")
    parser.add_argument("--seeds", nargs="+", type=int, default=[], metavar="S",
                        help="repeat every Problem 4 run with these seeds too (runs NAME_seedS)")
    parser.add_argument("--jobs", type=int, default=1, metavar="N",
                        help="make N runs at once, spread over the visible GPUs (default: %(default)s)")
    parser.add_argument("--dry_run", action="store_true",
                        help="every run of the plan made tiny (1 epoch, 64-px images, small subsets), into "
                             "runs/<profile>-dry: checks on any machine that the plan works")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        raise UserError(f"--jobs {args.jobs}: give at least 1")

    runs = plan(args.profile, args.data, args.data_dir, args.seeds, args.dry_run)
    unknown = sorted(set(args.only or []) - set(runs))
    if unknown:
        raise UserError(f"unknown run name(s) {', '.join(unknown)}; choose from {', '.join(runs)}")
    selected = {k: v for k, v in runs.items() if not args.only or k in args.only}
    root = Path(args.runs) / (args.profile + ("-dry" if args.dry_run else ""))

    if args.list:
        for name in selected:
            extra = (f" --seeds {' '.join(map(str, args.seeds))}" if args.seeds else "") + \
                (" --dry_run" if args.dry_run else "")
            print(f"python experiments.py --profile {args.profile} "
                  f"--data {shlex.quote(args.data)} --data_dir {shlex.quote(args.data_dir)} "
                  f"--runs {shlex.quote(args.runs)}{extra} --only {name}")
        return

    # a dry run checks the plan's commands, on whatever device is here
    todo, not_run = check_and_estimate(selected, root, "cpu" if args.dry_run else args.profile,
                                       estimate=not (args.no_estimate or args.dry_run))
    if args.estimate:
        return
    summary = {name: f"not run: {reason}" for name, reason in not_run.items()}
    summary.update(make_runs(todo, root, args.jobs, f"{args.profile} runs"))
    # merged with earlier invocations' (--only, a job array): one line per run, its latest state
    previous = read_json(root / "summary.json")["runs"] if (root / "summary.json").exists() else {}
    write_json(root / "summary.json", {"profile": args.profile, "runs": {**previous, **summary},
                                       "date": datetime.datetime.now().isoformat(timespec="seconds")})


if __name__ == "__main__":
    run_cli(main)
