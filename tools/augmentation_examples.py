"""
The report's examples of Problem 4.3's augmentation strategies, drawn from the training data
by the code that trains with them (no training run needed).

    python -m tools.augmentation_examples --data data/retina   # runs/cpu/augmentation_examples/

Each strategy of ``medimg.strategies.STRATEGIES`` but ``none`` (a row) transforms the first
training eye, resized as the ``cpu`` profile trains on it, ``--count`` times, exactly as
``RetinaTrainSet`` does in training (the whole image is transformed; sizes are fractions of
its side). Each panel is the ``--window``-pixel square of that eye with the most vessel,
enlarged ``--zoom`` times by pixel repetition so that a resampled or displaced vessel shows in
print; the first column is the untouched square. Writes ``augmentations.jpg`` (a photograph:
JPEG, not a palette) and ``examples.json`` (the strategies' transforms in words, the command,
machine and date); the report sets the row labels and the parameters as text.
"""
import argparse
import datetime
import shlex
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from medimg.cli import UserError, run_cli
from medimg.figures import vessel_window
from medimg.machine import machine_info
from medimg.registry import CPU_IMAGE
from medimg.retina import RetinaTrainSet, load_split
from medimg.runfiles import atomic_write, write_json
from medimg.strategies import STRATEGIES, describe

GUTTER = 6  # white pixels between panels


def draw(image: torch.Tensor, mask: torch.Tensor, count: int, seed: int, window: int, zoom: int):
    """``(grid, names, (top, left, side))``: the grid as a ``uint8 [H, W, 3]`` array, one row per
    strategy but ``none``; the rows' strategies; and the square shown, in image pixels."""
    (top, left), size = vessel_window(mask, window)
    square = (..., slice(top, top + size), slice(left, left + size))

    def panel(x):  # float [3, h, w] in [0, 1] -> the enlarged square, uint8 [size*zoom, size*zoom, 3]
        pixels = (x[square].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        return pixels.repeat(zoom, 0).repeat(zoom, 1)

    names = [name for name in STRATEGIES if name != "none"]
    side = size * zoom
    grid = np.full((len(names) * (side + GUTTER) - GUTTER, (count + 1) * (side + GUTTER) - GUTTER, 3), 255, np.uint8)
    torch.manual_seed(seed)
    for row, name in enumerate(names):
        dataset = RetinaTrainSet(image[None], mask[None], augmentation=name)
        panels = [image.float() / 255] + [dataset[0][0] for _ in range(count)]
        for col, x in enumerate(panels):
            y0, x0 = row * (side + GUTTER), col * (side + GUTTER)
            grid[y0:y0 + side, x0:x0 + side] = panel(x)
    return grid, names, (top, left, size)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="the course's retina folder (train/image, train/mask)")
    parser.add_argument("--out", default="runs/cpu/augmentation_examples")
    parser.add_argument("--image_size", type=int, default=CPU_IMAGE, help="the side the images are resized to, "
                        "as the training run does (default: the cpu profile's)")
    parser.add_argument("--window", type=int, default=128, help="the side of the square shown, in image pixels")
    parser.add_argument("--zoom", type=int, default=2, help="printed pixels per image pixel")
    parser.add_argument("--count", type=int, default=4, help="random draws of each strategy")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    if min(args.window, args.zoom, args.count, args.image_size) < 1:
        raise UserError("--image_size, --window, --zoom and --count must be positive")
    train = Path(args.data) / "train"
    if not (train / "image").is_dir() or not (train / "mask").is_dir():
        raise UserError(f"{args.data}: no train/image and train/mask in it; pass --data the course's retina folder")
    names, images, masks, _ = load_split(train, args.image_size)
    grid, rows, (top, left, size) = draw(images[0], masks[0], args.count, args.seed, args.window, args.zoom)
    out = Path(args.out)
    atomic_write(out / "augmentations.jpg", lambda tmp: Image.fromarray(grid).save(tmp, format="JPEG", quality=90))
    write_json(out / "examples.json", {
        "image": names[0], "image_size": args.image_size, "square": {"top": top, "left": left, "side": size},
        "zoom": args.zoom, "draws": args.count, "seed": args.seed, "ratio": grid.shape[0] / grid.shape[1],
        "rows": rows, "strategies": [{"name": name, "description": describe(name)} for name in rows],
        "command": shlex.join(["python", "-m", "tools.augmentation_examples", *(sys.argv[1:] if argv is None else argv)]),
        "machine": machine_info(), "made": datetime.datetime.now().isoformat(timespec="seconds")})
    print(f"wrote {out / 'augmentations.jpg'} and {out / 'examples.json'}: {len(rows)} strategies x {args.count} "
          f"draws of {names[0]}")


if __name__ == "__main__":
    run_cli(main)
