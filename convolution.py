"""
Problem 2, questions 1 to 3: the speed of our 2-D convolution against SciPy and
PyTorch, a blurring kernel and edge kernels.

    python convolution.py --out runs/cpu/convolution [--image photo.jpg] [--quick]

Writes into OUT: ``convolution_timings.json`` and ``convolution_speed.png`` (question 1),
``blur.png`` (question 2) and ``edges.png`` (question 3). Every method computes the
same cross-correlation in float64; the JSON records that they agree.
"""
import argparse
import datetime
import sys
import time
from pathlib import Path

import scipy
import torch

from medimg.cli import UserError, run_cli
from medimg.convolution import (
    NOTES,
    blur_figure,
    edges_figure,
    load_grayscale,
    speed_figure,
    speed_study,
)
from medimg.machine import library_versions, machine_info
from medimg.runfiles import write_json


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--image", help="photograph to filter (default: matplotlib's grace_hopper.jpg)")
    parser.add_argument("--quick", action="store_true", help="small sizes only: ends in seconds")
    args = parser.parse_args()
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder; choose another path")
    image = load_grayscale(args.image)

    started = time.perf_counter()
    torch.set_num_threads(1)  # SciPy and NumPy use one core here: compare like with like
    if args.quick:
        sizes, kernel_sizes, loop_limit = [64, 128, 256], [3, 7], 2.0
    else:
        sizes, kernel_sizes, loop_limit = [64, 128, 256, 512, 1024], [3, 5, 9, 15], 60.0
    records = speed_study(sizes, kernel_sizes, loop_limit)

    def seconds(method, size, k):
        row = [r for r in records if r["method"] == method and r["image_size"] == size and r["kernel_size"] == k]
        return row[0].get("seconds") if row else None

    largest = max(sizes)
    bars = {"image_size": largest, "kernel_size": 3,
            "ours_over_scipy": seconds("ours (vectorised)", largest, 3) / seconds("scipy correlate2d", largest, 3)}
    loop_size = max(r["image_size"] for r in records if r["method"].startswith("loop") and "seconds" in r)
    bars["loop_over_ours"] = {"image_size": loop_size, "ratio": seconds("loop (definition)", loop_size, 3) /
                              seconds("ours (vectorised)", loop_size, 3)}
    bars["ours_over_scipy_by_kernel"] = {k: seconds("ours (vectorised)", largest, k) /
                                         seconds("scipy correlate2d", largest, k) for k in kernel_sizes}

    out.mkdir(parents=True, exist_ok=True)
    speed_figure(records, out / "convolution_speed.png")
    blur = blur_figure(image, out / "blur.png")
    edges = edges_figure(image, out / "edges.png")
    write_json(out / "convolution_timings.json", {
        "command": " ".join(["python", *sys.argv]),
        "config": {"quick": args.quick, "image": args.image or "matplotlib grace_hopper.jpg",
                   "image_shape": list(image.shape), "sizes": sizes, "kernel_sizes": kernel_sizes,
                   "loop_skipped_above_seconds": loop_limit, "dtype": "float64", "torch_threads": 1,
                   "grayscale": "0.299 R + 0.587 G + 0.114 B (ITU-R BT.601)"},
        "all_methods_agree": all(r.get("agrees", True) for r in records),
        "records": records, "bars": bars, "blur": blur, "edges": edges, "notes": NOTES,
        "machine": machine_info(), "versions": {**library_versions(), "scipy": scipy.__version__},
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "seconds": time.perf_counter() - started,
    })
    print(f"ours/scipy at {largest}px 3x3: {bars['ours_over_scipy']:.2f}x the time; "
          f"loop/ours at {loop_size}px: {bars['loop_over_ours']['ratio']:.0f}x; wrote {out}")


if __name__ == "__main__":
    run_cli(main)
