"""The human baseline under the report's own protocol: DRIVE's second observer
(``test/2nd_manual``) scored against the first (``test/1st_manual``) exactly as the models
are scored. The course's 512x512 masks were made from the first observer's GIFs by a
nearest-neighbour resize (``RESAMPLE``; ``score`` checks it against the course's masks when
they are given), so both observers are resampled so; then the thresholded Dice of each
test image (``medimg.segmentation_metrics.thresholded_dice``, the second observer as the
prediction) and their mean over the 20 test images.

``python -m report.build --drive PATH`` runs it and writes ``runs/human_baseline.json``.

The same log records what the course template's broadcast Dice (``template_dice``) gives
a perfect prediction of these masks, two images a batch."""
import datetime
import sys
from pathlib import Path

import numpy as np
import torch

from medimg.segmentation_metrics import thresholded_dice

SIZE = 512


def _resample(path, size=SIZE):
    """A binary mask file resized to ``size`` x ``size`` by nearest neighbour, as the course set was made."""
    from PIL import Image
    with Image.open(path) as im:
        return np.array(im.convert("L").resize((size, size), Image.NEAREST)) > 127


def _by_id(folder):
    """Mask files of a DRIVE folder by image number (``01_manual1.gif`` -> ``01``)."""
    return {p.name.split("_")[0]: p for p in sorted(Path(folder).iterdir()) if p.is_file()}


def template_dice(logits, y):
    """The course template's Dice, reproduced: targets ``y.squeeze()`` of shape ``[B, H, W]``
    against thresholded predictions ``[B, 1, H, W]``. The product broadcasts to
    ``[B, B, H, W]``, so the intersection adds every image's prediction against every
    image's vessels; the denominator does not broadcast. Kept here only to show the pitfall."""
    pred = (torch.sigmoid(logits) > 0.5).float()
    target = y.squeeze().float()
    intersection = (pred * target).sum()
    return (2 * intersection / (pred.sum() + target.sum())).item()


def score(drive, retina=None):
    """The second observer against the first on DRIVE's test images, resampled to 512x512:
    per-image thresholded Dice and its mean; with the course folder ``retina``, how many
    pixels of the course's test masks the resampling of the first observer misses."""
    drive = Path(drive)
    first, second = _by_id(drive / "test" / "1st_manual"), _by_id(drive / "test" / "2nd_manual")
    ids = sorted(set(first) & set(second))
    if not ids:
        raise FileNotFoundError(f"{drive}/test: no image has both 1st_manual and 2nd_manual annotations")
    truths = {i: _resample(first[i]) for i in ids}
    per_image = {i: thresholded_dice(torch.from_numpy(_resample(second[i])), torch.from_numpy(truths[i]))
                 for i in ids}
    record = {"what": "DRIVE test/2nd_manual scored against test/1st_manual, both resized to 512x512 by "
                      "nearest neighbour; thresholded Dice per image, mean over the images",
              "n_images": len(ids), "mean_dice": float(np.mean(list(per_image.values()))),
              "sd_dice": float(np.std(list(per_image.values()), ddof=1)) if len(ids) > 1 else 0.0,
              "min_dice": min(per_image.values()), "max_dice": max(per_image.values()),
              "per_image": per_image}
    if retina is not None:
        course = {p.name.split("_")[0]: p for p in sorted((Path(retina) / "test" / "mask").glob("*.png"))}
        common = [i for i in ids if i in course]
        record["resampling_check"] = {
            "course_masks": str(retina), "images": len(common),
            "pixels_differing": int(sum((_resample(course[i]) != truths[i]).sum() for i in common))}
    # the template's broadcast Dice on perfect predictions, the test images two a batch in order
    masks = torch.stack([torch.from_numpy(truths[i]) for i in ids]).float()[:, None]
    logits = (masks * 2 - 1) * 10  # sigmoid > 0.5 exactly on the vessels: a perfect prediction
    pairs = [template_dice(logits[k:k + 2], masks[k:k + 2]) for k in range(0, len(ids) - 1, 2)]
    record["template_dice_of_a_perfect_prediction"] = {
        "batch": 2, "batches": len(pairs), "mean": float(np.mean(pairs)), "min": min(pairs), "max": max(pairs)}
    return record


def write(drive, out, retina=None):
    """Score and write the log, with the command, date and machine."""
    from medimg.machine import machine_info
    from medimg.runfiles import write_json
    record = {"command": " ".join(["python -m report.build", *sys.argv[1:]]) if sys.argv else "",
              "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
              "drive": str(drive), **score(drive, retina),
              "machine": {k: v for k, v in machine_info().items() if k in ("cpu", "platform")}}
    write_json(out, record)
    return record
