"""
The pilot that checks the ``cpu`` profile's whole-image setting before the rest of the plan
is made on it (issue: Problem 4 where its effects can show).

    python experiments.py --profile cpu --data data/retina --jobs 2 \\
        --only unet unet_seed43 unet_noskip unet_noskip_seed43 aug_none aug_none_seed43
    python -m tools.pilot_whole --runs runs/cpu --data data/retina   # runs/cpu/pilot_whole/choice.json

(``tools/README.md`` makes them across sessions in a worktree, 4.3's ``aug_none`` second, and
commits each in ``runs/cpu_whole``, which ``--runs runs/cpu_whole`` judges.)

The pilot's runs are the plan's own first runs (the same commands, the same folders), so
nothing is made twice. It judges them on held-out training eyes, never on the test images:

(a) the reference UNet (4.1 and 4.4's setting: 16 training eyes, whole images at
    ``registry.CPU_IMAGE`` px) leaves the all-background output within 40% of its steps: its
    first vessels on the held-out eyes (the report's rule: a thresholded Dice above 0.05 that
    is not what predicting every pixel a vessel scores there) come by then, in every seed;
(b) without augmentation, on 4 training eyes (4.3's setting), the UNet fits its training
    eyes better than its held-out eyes at the end, by at least ``MIN_GAP`` on average over
    the seeds and by more than the gaps' own spread across seeds, so augmentation has a gap
    to close.

It also says whether the UNet without skip connections leaves the all-background output in
4.1's setting, whether 4.3 needs five seeds (the no-augmentation arm's held-out Dice spreads
by more than ``FIVE_SEEDS_SPREAD`` across seeds), and what the resize does to thin vessels:
each training mask brought to the setting's size (nearest neighbour, as the script does) and
back, against the original (the share of vessel pixels kept, and the Dice of that round trip,
the best any prediction at that size can score at full size).
"""
import argparse
import datetime
import shlex
import statistics
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from medimg.cli import UserError, run_cli
from medimg.machine import machine_info
from medimg.registry import CPU_IMAGE, copy_name, plan
from medimg.runfiles import read_json, write_json
from medimg.runner import other_setting
from report.logs import first_vessel_epoch

SEEDS = (42, 43)
EXIT_WITHIN = 0.4       # of the run's epochs (so of its steps: the rate is constant)
MIN_GAP = 0.05
FIVE_SEEDS_SPREAD = 0.03


def exit_epoch(results: dict):
    """The first evaluated epoch with vessels on the held-out eyes (``report.logs.first_vessel_epoch``,
    against the all-vessel Dice of those eyes, which the run records), or None."""
    return first_vessel_epoch(results)


def end_state(results: dict) -> dict:
    """The last evaluation: the training eyes' and the held-out eyes' thresholded Dice and their gap."""
    train, held_out = results["train_whole_dice_thresholded"][-1], results["valid_dice_thresholded"][-1]
    return {"train_eyes": train, "held_out": held_out, "gap": train - held_out}


def judge(runs: Path) -> dict:
    """The pilot's numbers and verdicts from the runs under ``runs``; a UserError names a missing run."""
    planned = plan("cpu", "data/retina", "data")

    def load(name, seed):
        path = runs / copy_name(name, seed) / "results.json"
        if not path.exists():
            raise UserError(f"{path}: not made yet; make the pilot's runs first (this module's docstring)")
        results = read_json(path)
        script, arguments = planned[copy_name(name, seed)]
        differs = other_setting(path.parent, script, arguments)
        if differs or results.get("evaluated_on") != "validation":
            raise UserError(f"{path}: made in another setting than the cpu profile's ({differs or 'no held-out eyes'}); "
                            f"move it away and make it with the cpu profile")
        return results

    def per_seed(name):
        out = {}
        for seed in SEEDS:
            r = load(name, seed)
            epochs = r["config"]["epochs"]
            out[seed] = {"exit_epoch": exit_epoch(r), "epochs": epochs, **end_state(r),
                         "held_out_curve": r["valid_dice_thresholded"], "evaluated_epochs": r["evaluated_epochs"],
                         "code_fingerprint": r["code_fingerprint"]["sha256"][:12],
                         "seconds": r["timings"]["total_seconds"]}
        return out
    reference, noskip, plain = per_seed("unet"), per_seed("unet_noskip"), per_seed("aug_none")
    a = all(s["exit_epoch"] is not None and s["exit_epoch"] <= EXIT_WITHIN * s["epochs"] for s in reference.values())
    gaps, held_out = [s["gap"] for s in plain.values()], [s["held_out"] for s in plain.values()]
    b = statistics.mean(gaps) >= MIN_GAP and statistics.mean(gaps) > statistics.stdev(gaps)
    spread = statistics.stdev(held_out)
    return {"reference_unet": reference, "unet_noskip": noskip, "aug_none": plain,
            "a_reference_leaves_in_time": a, "b_gap_to_close": b,
            "noskip_leaves_plateau": [s["exit_epoch"] is not None for s in noskip.values()],
            "mean_gap_without_augmentation": statistics.mean(gaps), "gap_sd_without_augmentation": statistics.stdev(gaps),
            "held_out_sd_without_augmentation": spread,
            "augmentation_seeds": 5 if spread > FIVE_SEEDS_SPREAD else 3,
            "fingerprints": sorted({s["code_fingerprint"] for arm in (reference, noskip, plain) for s in arm.values()})}


def thin_vessels(data: Path, size: int = CPU_IMAGE) -> dict:
    """What resizing to ``size`` px does to the vessels of the training masks: the share of
    vessel pixels kept when a mask goes to ``size`` and back (nearest neighbour both ways),
    and the Dice of that round trip against the original, averaged over the masks."""
    kept, dice = [], []
    for path in sorted((data / "train" / "mask").iterdir()):
        with Image.open(path) as image:
            original = image.convert("L")
        small = original.resize((size, size), Image.NEAREST)
        back = np.array(small.resize(original.size, Image.NEAREST)) > 127
        truth = np.array(original) > 127
        overlap = (back & truth).sum()
        kept.append(overlap / truth.sum())
        dice.append(2 * overlap / (back.sum() + truth.sum()))
    return {"size": size, "masks": len(kept), "vessel_pixels_kept": float(np.mean(kept)),
            "round_trip_dice": float(np.mean(dice)), "round_trip_dice_min": float(np.min(dice))}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default="runs/cpu", help="where the plan's runs are (default: %(default)s)")
    parser.add_argument("--data", default="data/retina", help="the retina folder, for the resize's effect")
    parser.add_argument("--out", default=None, help="default: RUNS/pilot_whole/choice.json")
    args = parser.parse_args(argv)
    if not (Path(args.data) / "train" / "mask").is_dir():
        raise UserError(f"{Path(args.data) / 'train' / 'mask'}: folder not found; pass --data PATH of the retina set")
    verdict = judge(Path(args.runs))
    chosen = verdict["a_reference_leaves_in_time"] and verdict["b_gap_to_close"]
    out = Path(args.out) if args.out else Path(args.runs) / "pilot_whole" / "choice.json"
    write_json(out, {
        "chosen": f"whole images at {CPU_IMAGE} px" if chosen else None,
        "rule": f"(a) the reference UNet's first vessels on its held-out eyes (a thresholded Dice above 0.05 and more "
                f"than 0.02 from the all-vessel output's) come within {EXIT_WITHIN:.0%} of its epochs in seeds "
                f"{', '.join(map(str, SEEDS))}; (b) without augmentation on 4.3's four training eyes, the training eyes' "
                f"Dice minus the held-out eyes' at the end is at least {MIN_GAP} on average and above the gaps' sd across "
                f"seeds. The test images are not read.",
        "candidates": {f"whole {CPU_IMAGE} px": verdict},
        "not_tried": "384 px: 2.25 times the cost of 256 px a step, beyond the plan's budget on two CPU cores",
        "thin_vessels": thin_vessels(Path(args.data)),
        "command": shlex.join(["python", "-m", "tools.pilot_whole", *(sys.argv[1:] if argv is None else argv)]),
        "machine": machine_info(), "made": datetime.datetime.now().isoformat(timespec="seconds")})
    print(f"(a) {verdict['a_reference_leaves_in_time']}, (b) {verdict['b_gap_to_close']}: "
          f"{'whole images at %d px' % CPU_IMAGE if chosen else 'the setting fails the rule'}; "
          f"4.3 needs {verdict['augmentation_seeds']} seeds; written to {out}")


if __name__ == "__main__":
    run_cli(main)
