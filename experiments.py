"""
Every run of the report, made in order (the runs themselves are listed in
``medimg/registry.py``, in two profiles: ``gpu``, the assignment's hyperparameters, and
``cpu``, scaled to two CPU cores):

    python experiments.py --profile cpu --data data/retina       # run them all
    python experiments.py --profile gpu --list                   # one shell command per run
    python experiments.py --profile cpu --only unet unet_noskip  # a selection

Outputs go to ``runs/<profile>/<name>/``. A finished run (its results.json exists) is
skipped and an interrupted one resumed. A run that cannot be made on this machine (no
PathMNIST file, no ImageNet weights offline) is said once and recorded in
``not_run.json`` with the reason and the command that fills it; nothing is ever faked.
"""
import argparse
import datetime
import shlex
from pathlib import Path
from typing import Optional

from medimg.cli import UserError, run_cli
from medimg.registry import PROFILES, plan
from medimg.runfiles import read_json, write_json
from medimg.runner import check_and_estimate, make_runs


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
    parser.add_argument("--seeds", nargs="*", type=int, default=None, metavar="S",
                        help="repeat every run of a Problem 4 comparison with these seeds too (runs NAME_seedS); "
                             "default: the profile's (cpu: 43 44, and 45 46 for 4.3; gpu: none); --seeds alone: none")
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
            extra = (f" --seeds {' '.join(map(str, args.seeds))}" if args.seeds is not None else "") + \
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
    runs = {**previous, **{name: state for name, state in summary.items() if changed(previous.get(name), state)}}
    if runs != previous or not (root / "summary.json").exists():  # nothing new: the file and its date stay
        write_json(root / "summary.json", {"profile": args.profile, "runs": runs,
                                           "date": datetime.datetime.now().isoformat(timespec="seconds")})


def changed(before: Optional[str], now: str) -> bool:
    """Whether a run's line in ``summary.json`` moves from ``before`` to ``now``: not for a
    run skipped as complete, nor for one still not made (its reason here, perhaps this
    machine's own, is said on the console)."""
    if before is None:
        return True
    return not (now == "complete (skipped)" or now.startswith("not run") and before.startswith("not run"))


if __name__ == "__main__":
    run_cli(main)
