"""tools/augmentation_examples.py: the report's examples of 4.3's strategies, drawn by the
training code from the data, and the build's refusal of examples the code no longer draws."""
import json

import numpy as np
import pytest
import torch
from conftest import write_retina
from PIL import Image

from medimg.cli import UserError
from medimg.retina import RetinaTrainSet, load_split
from medimg.strategies import STRATEGIES, describe
from report import build
from tools import augmentation_examples

ARGS = ["--image_size", "64", "--window", "32", "--zoom", "2", "--count", "2"]


@pytest.fixture(scope="module")
def small_retina(tmp_path_factory):
    return write_retina(tmp_path_factory.mktemp("retina"), n_train_fundi=2, copies=1, n_test=1)


def alike(a, b):
    """The same picture up to JPEG's rounding (the synthetic eyes are noisy, which JPEG blurs)."""
    return np.corrcoef(np.asarray(a, float).ravel(), np.asarray(b, float).ravel())[0, 1] > 0.98


def draw(data, out, *extra):
    augmentation_examples.main(["--data", str(data), "--out", str(out), *ARGS, *extra])
    return np.asarray(Image.open(out / "augmentations.jpg")), json.loads((out / "examples.json").read_text())


def test_every_strategy_is_a_row_of_the_training_eye_and_its_draws(small_retina, tmp_path):
    grid, record = draw(small_retina, tmp_path)
    names = [name for name in STRATEGIES if name != "none"]
    side, gutter = 32 * 2, augmentation_examples.GUTTER
    assert grid.shape == (len(names) * (side + gutter) - gutter, 3 * (side + gutter) - gutter, 3)
    assert record["rows"] == names and record["ratio"] == grid.shape[0] / grid.shape[1]
    assert record["strategies"] == [{"name": n, "description": describe(n)} for n in names]
    assert record["command"].startswith("python -m tools.augmentation_examples --data ")
    assert {"machine", "made", "seed", "image"} <= record.keys()
    # the first column is the eye itself, enlarged by pixel repetition (up to JPEG's rounding)
    names_, images, masks, _ = load_split(small_retina / "train", 64)
    top, left = record["square"]["top"], record["square"]["left"]
    square = images[0, :, top:top + 32, left:left + 32].permute(1, 2, 0).numpy()
    assert alike(grid[:side, :side], square.repeat(2, 0).repeat(2, 1))
    # a draw is what the training set yields for that strategy after the same seed
    torch.manual_seed(record["seed"])
    sample = RetinaTrainSet(images[:1], masks[:1], augmentation=names[0])[0][0]
    expected = (sample[:, top:top + 32, left:left + 32].clamp(0, 1) * 255).round().permute(1, 2, 0).numpy()
    drawn = grid[:side, side + gutter:2 * side + gutter]
    assert alike(drawn, expected.repeat(2, 0).repeat(2, 1)) and not alike(drawn, grid[:side, :side])


def test_the_seed_sets_the_draws(small_retina, tmp_path):
    once, _ = draw(small_retina, tmp_path / "a")
    again, _ = draw(small_retina, tmp_path / "b")
    other, _ = draw(small_retina, tmp_path / "c", "--seed", "7")
    assert np.array_equal(once, again) and not np.array_equal(once, other)


def test_a_folder_without_training_images_is_one_clear_error(tmp_path):
    with pytest.raises(UserError, match="train/image"):
        augmentation_examples.main(["--data", str(tmp_path), "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_the_build_refuses_examples_of_strategies_the_code_no_longer_builds(small_retina, tmp_path):
    folder, out = tmp_path / "augmentation_examples", tmp_path / "figures"
    out.mkdir()
    draw(small_retina, folder)
    assert build.augmentation_examples(folder, out)["rows"] == [n for n in STRATEGIES if n != "none"]
    assert (out / "unet_augmentations.jpg").read_bytes() == (folder / "augmentations.jpg").read_bytes()
    record = json.loads((folder / "examples.json").read_text())
    record["strategies"][1]["description"] = "SmoothElastic(displacement 0.005, spacing 0.125)"
    (folder / "examples.json").write_text(json.dumps(record))
    with pytest.raises(UserError, match="redraw them: python -m tools.augmentation_examples"):
        build.augmentation_examples(folder, out)
    assert build.augmentation_examples(tmp_path / "not drawn", out) is None
