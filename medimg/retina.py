"""The retina-vessel data of Problems 3 and 4: decoding the course's folders, the split
by eye, the augmentation strategies of Problem 4.3, and the training dataset.

The course's training set holds four copies of each of the 20 DRIVE training eyes
(original, flipped, rotated): ``21_training_0`` ... ``21_training_3``. Every split here
keeps the copies of one eye together, so no eye is on both sides of a split.
"""
import hashlib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as F

from medimg.cli import UserError
from medimg.strategies import STRATEGIES, describe  # noqa: F401 (describe: the strategies' words, re-exported)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".gif", ".bmp", ".ppm"}

def _smooth_field(channels: int, height: int, width: int, spacing: float, sd: float, device) -> torch.Tensor:
    """A smooth random field ``[1, channels, H, W]``: normal draws of standard deviation ``sd``
    at control points ``spacing`` (a fraction of the image's longer side) apart, interpolated
    bicubically. Drawn from the CPU stream whatever the device, so a seed gives the same field
    on a GPU."""
    step = max(1.0, spacing * max(height, width))
    grid = (int(height // step) + 2, int(width // step) + 2)
    field = (torch.randn(1, channels, *grid) * sd).to(device)
    return torch.nn.functional.interpolate(field, size=(height, width), mode="bicubic", align_corners=True)


class SmoothElastic:
    """Elastic deformation: a random displacement drawn at control points ``spacing`` apart
    (normal, ``displacement`` standard deviation per axis; both fractions of the image side),
    interpolated bicubically to every pixel, then applied to the image (bilinear) and the mask
    (nearest neighbour, so it stays binary) with the same field."""

    def __init__(self, displacement: float, spacing: float):
        self.displacement, self.spacing = displacement, spacing

    def __call__(self, image, mask=None):
        height, width = image.shape[-2:]
        side = max(height, width)
        field = _smooth_field(2, height, width, self.spacing, self.displacement * side, image.device)
        # torchvision's displacement: [1, H, W, 2], x then y, in units of the [-1, 1] grid
        field = (field[0].permute(1, 2, 0) * torch.tensor([2.0 / width, 2.0 / height], device=image.device))[None]
        image = tv_tensors.wrap(F.elastic(image, field, interpolation=InterpolationMode.BILINEAR), like=image)
        if mask is None:
            return image
        return image, tv_tensors.wrap(F.elastic(mask, field, interpolation=InterpolationMode.NEAREST), like=mask)


class RandomGamma:
    """``image ** gamma`` with ``gamma`` drawn log-uniformly from ``gamma`` (a range) for a
    float image in [0, 1]; the mask passes unchanged."""

    def __init__(self, gamma: tuple[float, float]):
        self.low, self.high = math.log(gamma[0]), math.log(gamma[1])

    def __call__(self, image, mask=None):
        gamma = math.exp(self.low + (self.high - self.low) * float(torch.rand(())))
        image = tv_tensors.wrap(image.clamp(0, 1) ** gamma, like=image)
        return image if mask is None else (image, mask)


class Illumination:
    """Uneven illumination: the image multiplied by ``exp`` of a smooth random field (normal,
    ``strength`` standard deviation at control points ``spacing``, a fraction of the side,
    apart), one field for all colour channels, clamped to [0, 1]; the mask passes unchanged."""

    def __init__(self, strength: float, spacing: float):
        self.strength, self.spacing = strength, spacing

    def __call__(self, image, mask=None):
        height, width = image.shape[-2:]
        gain = _smooth_field(1, height, width, self.spacing, self.strength, image.device)[0].exp()
        image = tv_tensors.wrap((image * gain).clamp(0, 1), like=image)
        return image if mask is None else (image, mask)


class Noise:
    """Sensor noise: a normal draw of standard deviation ``sigma`` added to every pixel and
    channel of a float image in [0, 1], clamped; drawn from the CPU stream whatever the device
    (torchvision's GaussianNoise draws on the image's), so a seed gives the same noise on a GPU."""

    def __init__(self, sigma: float):
        self.sigma = sigma

    def __call__(self, image, mask=None):
        noise = (torch.randn(image.shape) * self.sigma).to(image.device)
        image = tv_tensors.wrap((image + noise).clamp(0, 1), like=image)
        return image if mask is None else (image, mask)


CUSTOM = {"SmoothElastic": SmoothElastic, "RandomGamma": RandomGamma, "Illumination": Illumination, "Noise": Noise}
INTERPOLATION = {"bilinear": InterpolationMode.BILINEAR, "nearest": InterpolationMode.NEAREST}


def build_augmentation(name: str) -> Optional[v2.Compose]:
    """A ``torchvision.transforms.v2`` pipeline that moves image and mask together, or None.

    The image is made float in [0, 1] first, so that resampling and colour changes do not
    round to 8 bits between steps. The mask is a ``tv_tensors.Mask``: geometric transforms
    resample it with nearest neighbour (so it stays binary and aligned) and colour transforms
    leave it alone."""
    steps = []
    for class_name, kwargs in STRATEGIES[name]:
        kwargs = dict(kwargs)
        p = kwargs.pop("p", None)
        if "interpolation" in kwargs:
            kwargs["interpolation"] = INTERPOLATION[kwargs["interpolation"]]
        transform = (CUSTOM[class_name] if class_name in CUSTOM else getattr(v2, class_name))(**kwargs)
        steps.append(v2.RandomApply([transform], p=p) if p is not None else transform)
    return v2.Compose([v2.ToDtype(torch.float32, scale=True), *steps]) if steps else None


def _read(path, mode):
    try:
        with Image.open(path) as im:
            return im.convert(mode)
    except (UnidentifiedImageError, OSError) as err:
        raise UserError(f"{path}: cannot read it as an image ({err.__class__.__name__}); replace or remove it")


# load_split's results by (folder, image size, the files' names, sizes and times): several runs
# made in one process (tools/lease.py) decode the data once. A few entries, then it starts over.
_decoded = {}


def _files_key(folder, image_size):
    files = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for d in ("image", "mask")
             if (Path(folder) / d).is_dir() for p in sorted((Path(folder) / d).iterdir())]
    return str(Path(folder).resolve()), image_size, tuple(files)


def load_split(folder, image_size=0):
    """Decode every image/mask pair of ``folder/{image,mask}``, matched by file name.

    Returns ``(names, images, masks, sizes)``: images ``uint8 [N, 3, H, W]``, masks
    ``uint8 [N, 1, H, W]`` in {0, 1} (any mask value above half its range is vessel).
    Sizes not divisible by 16 are zero-padded at the bottom and right; ``sizes`` keeps
    the original ones so that metrics ignore the padding. Decoded once per process and
    unchanged folder; every call gets its own copies of the tensors."""
    key = _files_key(folder, image_size)
    if key not in _decoded:
        if len(_decoded) >= 4:
            _decoded.clear()
        _decoded[key] = _decode_split(folder, image_size)
    names, images, masks, sizes = _decoded[key]
    return list(names), images.clone(), masks.clone(), list(sizes)


def _decode_split(folder, image_size):
    folder = Path(folder)
    image_dir, mask_dir = folder / "image", folder / "mask"
    for d in (image_dir, mask_dir):
        if not d.is_dir():
            raise UserError(f"{d}: folder not found; --dataset must hold train/image, train/mask, "
                            f"test/image and test/mask")

    def by_stem(d):
        files = {}
        for p in sorted(d.iterdir()):
            if p.suffix.lower() in IMAGE_SUFFIXES:
                stem = re.sub(r"_(mask|manual\d?)$", "", p.stem)  # 01_test_manual1.gif pairs with 01_test.tif
                files[stem] = p
        return files

    images, masks = by_stem(image_dir), by_stem(mask_dir)
    if not images:
        raise UserError(f"{image_dir}: no images found ({', '.join(sorted(IMAGE_SUFFIXES))})")
    unmatched = sorted(set(images) ^ set(masks))
    if unmatched:
        first = unmatched[0]
        where = image_dir if first in images else mask_dir
        raise UserError(f"{where / first}*: has no partner of the same name in "
                        f"{mask_dir if where == image_dir else image_dir} ({len(unmatched)} unmatched); "
                        f"give every image a mask with the same file name")

    names, xs, ys, sizes = [], [], [], []
    for name in sorted(images):
        image, mask = _read(images[name], "RGB"), _read(masks[name], "L")
        if image.size != mask.size:
            raise UserError(f"{masks[name]}: mask is {mask.size[0]}x{mask.size[1]} but its image is "
                            f"{image.size[0]}x{image.size[1]}; they must be the same size")
        if image_size:
            image = image.resize((image_size, image_size), Image.BILINEAR)
            mask = mask.resize((image_size, image_size), Image.NEAREST)
        x = torch.from_numpy(np.array(image)).permute(2, 0, 1)
        y = torch.from_numpy(np.array(mask) > 127).to(torch.uint8)[None]
        names.append(name)
        sizes.append(tuple(x.shape[-2:]))
        xs.append(x)
        ys.append(y)
    height, width = max(s[0] for s in sizes), max(s[1] for s in sizes)
    height, width = -(-height // 16) * 16, -(-width // 16) * 16
    pad = lambda t: torch.nn.functional.pad(t, (0, width - t.shape[-1], 0, height - t.shape[-2]))
    return names, torch.stack([pad(x) for x in xs]), torch.stack([pad(y) for y in ys]), sizes


def fundus_id(name: str) -> str:
    """``21_training_3`` -> ``21_training``: the flipped/rotated copies of one eye share an id."""
    return re.sub(r"_\d+$", "", name)


def split_by_fundus(names: Sequence[str], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """``(train, val)`` indices: a random ``val_fraction`` of the eyes held out, copies together."""
    groups = sorted({fundus_id(n) for n in names})
    n_val = max(1, round(len(groups) * val_fraction))
    if n_val >= len(groups):
        raise UserError(f"--val_fraction {val_fraction} leaves no training fundus out of {len(groups)}")
    rng = np.random.default_rng(seed)
    val_groups = set(rng.choice(groups, size=n_val, replace=False).tolist())
    val = [i for i, n in enumerate(names) if fundus_id(n) in val_groups]
    train = [i for i, n in enumerate(names) if fundus_id(n) not in val_groups]
    return train, val


def subset_of_fundi(names: Sequence[str], fraction: float, seed: int) -> list[int]:
    """Indices of the images of a random ``fraction`` of the eyes (at least one), copies together."""
    groups = sorted({fundus_id(n) for n in names})
    n_keep = max(1, round(len(groups) * fraction))
    kept = set(np.random.default_rng(seed + 1).choice(groups, size=n_keep, replace=False).tolist())
    return [i for i, n in enumerate(names) if fundus_id(n) in kept]


def one_copy_per_eye(names: Sequence[str]) -> list[int]:
    """Indices of the first copy of every eye: whole training images to evaluate on."""
    seen, keep = set(), []
    for i, name in enumerate(names):
        if fundus_id(name) not in seen:
            seen.add(fundus_id(name))
            keep.append(i)
    return keep


@dataclass
class Split:
    """Decoded image/mask pairs of one split, as ``load_split`` returns them: ``names`` (the
    file stems, e.g. ``21_training_0``), ``images`` uint8 ``[N, 3, H, W]``, ``masks`` uint8
    ``[N, 1, H, W]`` in {0, 1}, both zero-padded to multiples of 16, and the original
    ``sizes`` ``[(h, w)]`` that metrics crop back to."""
    names: list[str]
    images: torch.Tensor
    masks: torch.Tensor
    sizes: list[tuple[int, int]]

    @classmethod
    def load(cls, folder: Path, image_size: int = 0) -> "Split":
        """``folder/{image,mask}`` decoded (``load_split``), resized to ``image_size`` when not 0."""
        return cls(*load_split(folder, image_size))

    def subset(self, indices: Sequence[int]) -> "Split":
        """The pairs at ``indices``, in that order."""
        indices = list(indices)
        return Split([self.names[i] for i in indices], self.images[indices], self.masks[indices],
                     [self.sizes[i] for i in indices])

    def __len__(self) -> int:
        return len(self.names)


class RetinaTrainSet(torch.utils.data.Dataset):
    """Training samples: augmentation on the whole image, then a random crop. Returns
    ``(image float [3, h, w] in [0, 1], mask float [1, h, w] in {0, 1})`` on the device of
    ``images``: given tensors on a GPU, augmentation and cropping run there, and a loader
    without workers only indexes and stacks (random parameters still come from the CPU
    stream, so a seed draws the same augmentations on any device)."""

    def __init__(self, images, masks, augmentation="none", crop_size=0, crops_per_image=1):
        self.images, self.masks = images, masks
        self.transform = build_augmentation(augmentation)
        self.crop_size, self.repeats = crop_size, crops_per_image if crop_size else 1
        self.trace = None  # a dict: index -> SHA-256 of each sample drawn, in the order drawn

    def _traced(self, index, image, mask):
        if self.trace is not None:
            digest = hashlib.sha256(image.detach().cpu().numpy().tobytes() + mask.detach().cpu().numpy().tobytes())
            self.trace[index] = digest.hexdigest()[:12]
        return image, mask

    def __len__(self):
        return len(self.images) * self.repeats

    def __getitem__(self, index):
        image, mask = self.images[index % len(self.images)], self.masks[index % len(self.masks)]
        if self.transform is not None:
            image, mask = self.transform(tv_tensors.Image(image), tv_tensors.Mask(mask))
        if self.crop_size:
            height, width = image.shape[-2:]
            top = int(torch.randint(0, height - self.crop_size + 1, ()))
            left = int(torch.randint(0, width - self.crop_size + 1, ()))
            window = (..., slice(top, top + self.crop_size), slice(left, left + self.crop_size))
            image, mask = image[window], mask[window]
        image = image.as_subclass(torch.Tensor)
        image = image.float() / 255.0 if image.dtype == torch.uint8 else image  # augmented: float already
        return self._traced(index, image, mask.as_subclass(torch.Tensor).float())
