"""Synthetic data in the real formats, made fresh for each test session: the tests never
need ../shared or a download."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]


def vessel_pair(rng, size=64):
    """A fundus-like RGB image (textured orange disc on black) with thin dark random
    curves, and its binary vessel mask (0/255)."""
    yy, xx = np.mgrid[:size, :size]
    disc = np.hypot(yy - size / 2, xx - size / 2) < size * 0.45
    texture = rng.normal(0, 8, (size, size))
    image = np.zeros((size, size, 3))
    image[disc] = np.array([200.0, 90.0, 40.0])
    image += (texture * disc)[..., None]
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    for _ in range(4):
        points = [tuple(rng.uniform(size * 0.15, size * 0.85, 2))]
        for _ in range(6):
            step = rng.normal(0, size * 0.12, 2)
            points.append(tuple(np.clip(np.array(points[-1]) + step, 2, size - 3)))
        draw.line(points, fill=255, width=int(rng.integers(1, 3)))
    vessels = np.asarray(mask) > 0
    image[vessels] *= 0.45
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)), mask


def write_retina(root, n_train_fundi=3, copies=2, n_test=2, size=64, seed=0):
    rng = np.random.default_rng(seed)
    root = Path(root)
    for split in ("train", "test"):
        (root / split / "image").mkdir(parents=True)
        (root / split / "mask").mkdir(parents=True)
    for f in range(n_train_fundi):
        image, mask = vessel_pair(rng, size)
        for k in range(copies):  # the course's layout: flipped copies of one eye
            flip = (lambda im: im.transpose(Image.FLIP_LEFT_RIGHT)) if k % 2 else (lambda im: im)
            flip(image).save(root / "train" / "image" / f"{21 + f}_training_{k}.png")
            flip(mask).save(root / "train" / "mask" / f"{21 + f}_training_{k}.png")
    for t in range(n_test):
        image, mask = vessel_pair(rng, size)
        image.save(root / "test" / "image" / f"{t + 1:02d}_test.png")
        mask.save(root / "test" / "mask" / f"{t + 1:02d}_test.png")
    return root


def write_pathmnist(path, sizes=(180, 60, 60), image_size=28, seed=0):
    """A PathMNIST-format file (uncompressed, like medmnist's): ``{split}_images`` uint8
    [N, S, S, 3] and ``{split}_labels`` uint8 [N, 1]. Class k lights colour channel
    k % 3 in horizontal band k // 3, a pattern that survives the training transforms
    (flips, mild crops) and that a model can learn in a few epochs."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in zip(("train", "val", "test"), sizes):
        labels = np.arange(n) % 9
        rng.shuffle(labels)
        images = rng.integers(0, 60, (n, image_size, image_size, 3)).astype(np.uint8)
        band = image_size // 3
        for i, k in enumerate(labels):
            images[i, (k // 3) * band:(k // 3 + 1) * band, :, k % 3] = 220
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels[:, None].astype(np.uint8)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def assert_picture(path, min_colours=50):
    """A readable PNG that shows something (not a blank canvas); returns its size."""
    from PIL import Image
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert len(set(im.convert("RGB").getdata())) >= min_colours, path
        return im.size


def interrupt_at_epoch(monkeypatch, module, epoch):
    """Make ``module.train`` raise KeyboardInterrupt when it reaches ``epoch`` (as Ctrl-C
    would), and return a function that restores it."""
    real_train = module.train

    def interrupted(at_epoch, *args, **kwargs):
        if at_epoch == epoch:
            raise KeyboardInterrupt
        return real_train(at_epoch, *args, **kwargs)

    monkeypatch.setattr(module, "train", interrupted)
    return lambda: monkeypatch.setattr(module, "train", real_train)


@pytest.fixture(scope="session")
def retina(tmp_path_factory):
    return write_retina(tmp_path_factory.mktemp("retina"))


@pytest.fixture(scope="session")
def pathmnist_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("medmnist")
    write_pathmnist(root / "pathmnist.npz")
    return root


@pytest.fixture
def offline(monkeypatch):
    """No network: every socket connection fails at once, as on a machine without internet."""
    import socket

    def refuse(*args, **kwargs):
        raise OSError("network is unreachable (tests run offline)")
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(autouse=True, scope="session")
def _execution_cache(tmp_path_factory):
    """The scripts remember their measured execution choice per machine; tests keep theirs
    apart from the user's cache."""
    import os
    previous = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if previous is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = previous


@pytest.fixture(autouse=True, scope="session")
def _report_build_products(tmp_path_factory):
    """Tests build the report from made-up runs into report/generated and report/figures (the
    Typst source reads them from there); the user's build products are put back afterwards, so
    that compiling report.typ after the tests still shows the real runs' numbers."""
    import shutil
    saved = tmp_path_factory.mktemp("report_build")
    kept = [name for name in ("generated", "figures") if (ROOT / "report" / name).is_dir()]
    for name in kept:
        shutil.copytree(ROOT / "report" / name, saved / name)
    yield
    for name in ("generated", "figures"):
        shutil.rmtree(ROOT / "report" / name, ignore_errors=True)
        if name in kept:
            shutil.copytree(saved / name, ROOT / "report" / name)
