"""
Copy the finished runs of a plan made elsewhere (a worktree, another machine's folder) into the
checkout's runs folder, as they are committed: the logs and figures, never a checkpoint (nor a
seed copy's panel of test predictions: the first seed's shows the configuration).

    python -m tools.collect_runs /work/exp/runs/cpu runs/cpu
    python -m tools.collect_runs /work/exp/runs/cpu runs/cpu_whole --made_by b4b9d8dfab2d

A run is finished when its folder holds its results (results.json, or the convolution study's
convolution_timings.json) and no checkpoint.pt (a run stopped in flight keeps its checkpoint
where it was made, to resume there). A finished run the destination holds already is left as it
is; a not_run.json there (the run could not be made on another machine) goes, as when a run is
made in place. ``--made_by`` copies only the runs of one version of the training code (the
runs of a plan, not the earlier runs its worktree holds); only segmentation runs record a
fingerprint, so with it no other run is copied. ``--moved_to`` names a folder the destination's
runs move on to (``runs/cpu``, once their question is complete): a run found there, complete and
made by the same code, is not copied back. Prints the names of the runs copied.

    python -m tools.collect_runs /work/exp/runs/cpu runs/cpu_whole --made_by b4b9d8dfab2d --moved_to runs/cpu
"""
import argparse
import shutil
from pathlib import Path

from medimg.cli import UserError, run_cli
from medimg.runfiles import read_json
from medimg.runner import seed_copy_panel, status

# weights, the execution kept only for a resume, a file being written (runfiles.atomic_write), and
# the draws of every strategy that 4.3's elastic runs made at b632cc1 (--show_augmentations): the
# report draws its own (tools/augmentation_examples.py), and at 350 kB a run they would eat the
# room a GPU lease needs (tools/lease_carry.py)
# (and a seed copy's panel of test predictions: runner.seed_copy_panel)
LEFT_BEHIND = ("*.pt", "execution.json", ".*.tmp", "augmentations.png")
left_behind = shutil.ignore_patterns(*LEFT_BEHIND)


def made_by(folder: Path) -> str:
    """The code fingerprint a finished run recorded (``results.json``), or "" where it has none."""
    path = folder / "results.json"
    return (read_json(path).get("code_fingerprint") or {}).get("sha256", "") if path.exists() else ""


def collect(source: Path, destination: Path, fingerprint: str = "", moved_to: Path | None = None) -> list:
    """Copy every finished run under ``source`` that ``destination`` lacks, and, with
    ``fingerprint``, whose code fingerprint starts with it; with ``moved_to``, not one that folder
    holds finished and made by the same code (moved on there); returns their names."""
    copied = []
    for folder in sorted(p for p in source.iterdir() if p.is_dir()):
        target = destination / folder.name
        if status(folder) != "complete" or (folder / "checkpoint.pt").exists() or status(target) == "complete":
            continue
        if fingerprint and not made_by(folder).startswith(fingerprint):
            continue
        moved = moved_to / folder.name if moved_to else None
        if moved and status(moved) == "complete" and made_by(moved) == made_by(folder):
            continue
        shutil.copytree(folder, target, ignore=lambda path, names: left_behind(path, names) | {
            name for name in names if seed_copy_panel(folder.name, name)}, dirs_exist_ok=True)
        (target / "not_run.json").unlink(missing_ok=True)
        copied.append(folder.name)
    return copied


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="the runs folder where the plan is being made")
    parser.add_argument("destination", help="the checkout's runs folder, e.g. runs/cpu")
    parser.add_argument("--made_by", default="", metavar="FINGERPRINT",
                        help="only the runs whose code fingerprint (results.json) starts with this, e.g. b4b9d8dfab2d "
                             "(segmentation runs: the others record none)")
    parser.add_argument("--moved_to", default=None, metavar="FOLDER",
                        help="a folder the destination's runs move on to: a run found there, made by the same code, "
                             "is not copied again (e.g. runs/cpu)")
    args = parser.parse_args(argv)
    source, destination = Path(args.source), Path(args.destination)
    for path in (source, destination, *([Path(args.moved_to)] if args.moved_to else [])):
        if not path.is_dir():
            raise UserError(f"{path}: no such folder; give the plan's runs folder, then the checkout's (runs/cpu)")
    for name in collect(source, destination, args.made_by, Path(args.moved_to) if args.moved_to else None):
        print(name)


if __name__ == "__main__":
    run_cli(main)
