"""
The pilot that chooses the ``cpu`` profile's patch size (issue: Problem 4 on a CPU with the
assignment's own hyperparameters).

    python -m tools.pilot --data data/retina            # runs/cpu/pilot/, then choice.json

The ``cpu`` profile keeps every hyperparameter of the assignment and scales only what one
step sees: random square patches of the training images instead of whole images. The pilot
trains the reference UNet (AdamW 1e-4, batch 2, DiceCELoss) on patches of each candidate size,
smallest first, with seeds 42, 43 and 44, for the first ``PILOT_EPOCHS`` epochs of the 40 (the
learning rate is constant, so these are exactly the first epochs of a full run), and chooses
the smallest size at which every seed has left the all-background plateau by then: a
thresholded Dice of at least ``PLATEAU_EXIT_DICE`` on whole training eyes (never the test
images: the pilot chooses, so it must not look at them). Two runs at a time, sharing the
cores with the execution measured once for them (a run left alone takes every core); a size is dropped at its first seed that stays on
the plateau, and no larger size is tried once one qualifies.
"""
import argparse
import datetime
import os
import shlex
import sys
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

import torch

from medimg.cli import UserError, run_cli
from medimg.machine import machine_info
from medimg.runfiles import read_json, write_json
from medimg.runner import fixed_execution, run_one

CROP_SIZES = (128, 160, 192, 256)
SEEDS = (42, 43, 44)
PILOT_EPOCHS = 12
PLATEAU_EXIT_DICE = 0.1


def arguments(data: str, crop: int, seed: int) -> list[str]:
    """main_segmentation.py's arguments of one pilot run: the assignment's defaults, patches of
    ``crop`` pixels, the first PILOT_EPOCHS epochs, training eyes evaluated every third epoch."""
    return ["--dataset", data, "--crop_size", str(crop), "--epochs", str(PILOT_EPOCHS), "--eval_every", "3",
            "--train_eval", "every", "--seed", str(seed)]


def left_plateau(results: dict) -> bool:
    """Whether the run's last evaluation of the whole training eyes has a thresholded Dice of
    at least PLATEAU_EXIT_DICE (the all-background output scores 0)."""
    return results["train_whole_dice_thresholded"][-1] >= PLATEAU_EXIT_DICE


def verdicts(root: Path) -> dict:
    """Per crop size, the seeds made so far: the training eyes' thresholded Dice at each
    evaluation, whether it left the plateau; and whether the size qualifies (every seed did),
    fails (one did not) or is undecided."""
    sizes = {}
    for crop in CROP_SIZES:
        seeds = {}
        for seed in SEEDS:
            path = root / f"crop{crop}_seed{seed}" / "results.json"
            if path.exists():
                r = read_json(path)
                seeds[seed] = {"evaluated_epochs": r["evaluated_epochs"],
                               "train_eyes_dice": r["train_whole_dice_thresholded"],
                               "train_losses": r["train_losses"],
                               "left_plateau": left_plateau(r), "seconds": r["timings"]["total_seconds"]}
        verdict = "fails" if any(not s["left_plateau"] for s in seeds.values()) else \
            "qualifies" if len(seeds) == len(SEEDS) else "undecided"
        sizes[crop] = {"verdict": verdict, "seeds": seeds}
    return sizes


def choice(sizes: dict):
    """The smallest qualifying size once every smaller one has failed; when every size fails,
    the smallest (``FALLBACK``); else None (undecided)."""
    for crop in CROP_SIZES:
        if sizes[crop]["verdict"] != "fails":
            return crop if sizes[crop]["verdict"] == "qualifies" else None
    return CROP_SIZES[0]


# When no size leaves the plateau within PILOT_EPOCHS: the patch's size has not hastened the
# exit, and the smallest patch costs least. The reference UNet's three seeds, made first in the
# plan, then show whether that size leaves the plateau within the 40 epochs.
FALLBACK = ("no size left the plateau within the pilot's epochs: the smallest size is taken, the "
            "cheapest; the reference UNet's three seeds, made first, show whether it leaves within 40 epochs")


def next_runs(sizes: dict, running: set) -> list[tuple[int, int]]:
    """The (crop, seed) runs still worth making, in order: sizes not yet failed, up to the
    first that qualifies or could."""
    todo = []
    for crop in CROP_SIZES:
        if sizes[crop]["verdict"] == "fails":
            continue
        todo += [(crop, seed) for seed in SEEDS if seed not in sizes[crop]["seeds"] and (crop, seed) not in running]
        if sizes[crop]["verdict"] == "qualifies":
            break
    return todo


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/retina", help="the retina folder (train/ and test/)")
    parser.add_argument("--out", default="runs/cpu/pilot", help="where the pilot's runs and choice.json go")
    parser.add_argument("--jobs", type=int, default=2, help="runs at once, cores/jobs threads each")
    args = parser.parse_args(argv)
    for part in ("train/image", "train/mask", "test/image", "test/mask"):
        if not (Path(args.data) / part).is_dir():
            raise UserError(f"{Path(args.data) / part}: folder not found; pass --data PATH of the retina set")
    root = Path(args.out)
    started = datetime.datetime.now()
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        running = {}
        while True:
            sizes = verdicts(root)
            if choice(sizes) is not None and not running:
                break
            starting = next_runs(sizes, set(running.values()))[:args.jobs - len(running)]
            alone = not running and len(starting) == 1  # the last run left: it gets every core
            threads = None if alone else max(1, (os.cpu_count() or 1) // args.jobs)
            for crop, seed in starting:
                argv = arguments(args.data, crop, seed)
                if threads is not None:  # side by side: the execution measured once, alone, for every run
                    argv += fixed_execution("main_segmentation.py", argv, torch.device("cpu"), threads)
                future = pool.submit(run_one, f"crop{crop}_seed{seed}", "main_segmentation.py", argv,
                                     root / f"crop{crop}_seed{seed}", threads=threads)
                running[future] = (crop, seed)
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                crop_seed, state = running.pop(future), future.result()
                print(f"crop {crop_seed}: {state}", flush=True)
                if not state.startswith("done"):  # it would be made again and again
                    raise UserError(f"the pilot run crop{crop_seed[0]}_seed{crop_seed[1]} ended '{state}'; "
                                    f"see its log.txt, fix the cause and run the pilot again")
    sizes = verdicts(root)
    chosen = choice(sizes)
    every_size_fails = all(size["verdict"] == "fails" for size in sizes.values())
    write_json(root / "choice.json", {
        "chosen_crop_size": chosen, "rule": f"the smallest patch size at which every seed's thresholded Dice on "
        f"whole training eyes is >= {PLATEAU_EXIT_DICE} after epoch {PILOT_EPOCHS}",
        "fallback": FALLBACK if every_size_fails else None, "sizes": sizes,
        "command": shlex.join(["python", "-m", "tools.pilot", *(sys.argv[1:] if argv is None else argv)]),
        "machine": machine_info(),
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.datetime.now().isoformat(timespec="seconds")})
    print(f"chosen patch size: {chosen}" + (f" ({FALLBACK})" if every_size_fails else ""))


if __name__ == "__main__":
    run_cli(main)
