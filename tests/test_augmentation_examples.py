"""tools/augmentation_examples.py: the report's examples of 4.3's strategies, drawn by the
training code from the data, and the build's refusal of examples the runs no longer train on."""
import json

import numpy as np
import pytest
import torch
from conftest import write_retina
from PIL import Image

from medimg.cli import UserError
from medimg.registry import CPU_IMAGE
from medimg.retina import RetinaTrainSet, load_split
from medimg.strategies import STRATEGIES, describe
from report import build
from tools import augmentation_examples

SIZE, WINDOW, ZOOM, COUNT = 48, 32, 2, 2  # the synthetic eyes are 64 px: the resize is exercised
ARGS = ["--image_size", str(SIZE), "--window", str(WINDOW), "--zoom", str(ZOOM), "--count", str(COUNT)]


@pytest.fixture(scope="module")
def small_retina(tmp_path_factory):
    return write_retina(tmp_path_factory.mktemp("retina"), n_train_fundi=2, copies=1, n_test=1)


def draw(data, out, *args):
    augmentation_examples.main(["--data", str(data), "--out", str(out), *(args or ARGS)])
    return np.asarray(Image.open(out / "augmentations.jpg")).astype(float), json.loads((out / "examples.json").read_text())


def test_every_panel_is_what_the_training_set_draws_for_its_strategy(small_retina, tmp_path):
    grid, record = draw(small_retina, tmp_path)
    names = [name for name in STRATEGIES if name != "none"]
    side, gutter = WINDOW * ZOOM, augmentation_examples.GUTTER
    assert grid.shape == (len(names) * (side + gutter) - gutter, (COUNT + 1) * (side + gutter) - gutter, 3)
    assert record["rows"] == names and record["ratio"] == grid.shape[0] / grid.shape[1]
    assert record["strategies"] == [{"name": n, "description": describe(n)} for n in names]
    assert record["command"].startswith("python -m tools.augmentation_examples --data ")
    assert {"machine", "made", "seed", "image"} <= record.keys() and record["image_size"] == SIZE

    # the panels the training code yields after the same seed: the eye, then each strategy's draws
    _, images, masks, _ = load_split(small_retina / "train", SIZE)
    top, left = record["square"]["top"], record["square"]["left"]
    torch.manual_seed(record["seed"])
    expected = []
    for name in names:
        dataset = RetinaTrainSet(images[:1], masks[:1], augmentation=name)
        for x in [images[0].float() / 255] + [dataset[0][0] for _ in range(COUNT)]:
            pixels = (x[:, top:top + WINDOW, left:left + WINDOW].clamp(0, 1) * 255).round().permute(1, 2, 0).numpy()
            expected.append(pixels.repeat(ZOOM, 0).repeat(ZOOM, 1))
    panels = [grid[r * (side + gutter):r * (side + gutter) + side, c * (side + gutter):c * (side + gutter) + side]
              for r in range(len(names)) for c in range(COUNT + 1)]
    for k, panel in enumerate(panels):
        errors = [np.abs(panel - e).mean() for e in expected]
        # its own expected panel, up to JPEG's rounding, and closer than any other panel's
        assert errors[k] < 8 and all(errors[k] < e for j, e in enumerate(errors) if j != k and
                                     not np.array_equal(expected[j], expected[k])), (k, errors)


def test_the_seed_sets_the_draws(small_retina, tmp_path):
    once, _ = draw(small_retina, tmp_path / "a")
    again, _ = draw(small_retina, tmp_path / "b")
    other, _ = draw(small_retina, tmp_path / "c", *ARGS, "--seed", "7")
    assert np.array_equal(once, again) and not np.array_equal(once, other)


def test_a_folder_without_training_images_is_one_clear_error(tmp_path):
    with pytest.raises(UserError, match="train/image"):
        augmentation_examples.main(["--data", str(tmp_path), "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_the_build_takes_only_examples_of_what_the_runs_train_on(small_retina, tmp_path):
    folder, out = tmp_path / "augmentation_examples", tmp_path / "figures"
    out.mkdir()
    draw(small_retina, folder, "--image_size", str(CPU_IMAGE), "--window", "32", "--count", "1")
    assert build.augmentation_examples(folder, out)["rows"] == [n for n in STRATEGIES if n != "none"]
    assert (out / "unet_augmentations.jpg").read_bytes() == (folder / "augmentations.jpg").read_bytes()
    assert build.augmentation_examples(tmp_path / "not drawn", out) is None
    record = json.loads((folder / "examples.json").read_text())
    for change, why in ((lambda r: r["strategies"][1].update(description="SmoothElastic(displacement 0.005)"),
                         "other strategies"), (lambda r: r.update(image_size=CPU_IMAGE // 2), "trains at")):
        changed = json.loads(json.dumps(record))
        change(changed)
        (folder / "examples.json").write_text(json.dumps(changed))
        with pytest.raises(UserError, match=f"{why}.*redraw them: python -m tools.augmentation_examples --data data/retina"):
            build.augmentation_examples(folder, out)
