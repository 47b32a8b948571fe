"""
Copy the finished runs of a plan made elsewhere (a worktree, another machine's folder) into the
checkout's runs folder, as they are committed: the logs and figures, never a checkpoint.

    python -m tools.collect_runs /work/exp/runs/cpu runs/cpu

A run is finished when its folder holds a results.json and no checkpoint.pt (a run stopped in
flight keeps its checkpoint where it was made, to resume there). A run the destination holds
already is left as it is. Prints the names of the runs copied.
"""
import argparse
import shutil
from pathlib import Path

from medimg.cli import UserError, run_cli
from medimg.runfiles import finished

LEFT_BEHIND = ("*.pt", "execution.json")  # weights, and the execution kept only for a resume


def collect(source: Path, destination: Path) -> list:
    """Copy every finished run under ``source`` that ``destination`` lacks; returns their names."""
    copied = []
    for folder in sorted(p for p in source.iterdir() if p.is_dir()):
        target = destination / folder.name
        if not finished(folder) or (target / "results.json").exists():
            continue
        shutil.copytree(folder, target, ignore=shutil.ignore_patterns(*LEFT_BEHIND), dirs_exist_ok=True)
        copied.append(folder.name)
    return copied


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="the runs folder where the plan is being made")
    parser.add_argument("destination", help="the checkout's runs folder, e.g. runs/cpu")
    args = parser.parse_args(argv)
    source, destination = Path(args.source), Path(args.destination)
    for path in (source, destination):
        if not path.is_dir():
            raise UserError(f"{path}: no such folder; give the plan's runs folder, then the checkout's (runs/cpu)")
    for name in collect(source, destination):
        print(name)


if __name__ == "__main__":
    run_cli(main)
