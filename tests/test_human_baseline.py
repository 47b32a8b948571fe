"""The human baseline (report/human_baseline.py) on small generated DRIVE-like folders:
the second observer scored against the first as the models are scored (nearest-neighbour
resize to 512x512, thresholded Dice per image, mean over images), and the log the build writes."""
import json

import numpy as np
import pytest
from PIL import Image

from report import build, human_baseline


def _drive(root, masks_first, masks_second, size=(565, 584)):
    """DRIVE's layout (test/1st_manual/NN_manual1.gif, test/2nd_manual/NN_manual2.gif)."""
    for k, (a, b) in enumerate(zip(masks_first, masks_second), start=1):
        for folder, name, mask in (("1st_manual", f"{k:02d}_manual1.gif", a), ("2nd_manual", f"{k:02d}_manual2.gif", b)):
            (root / "test" / folder).mkdir(parents=True, exist_ok=True)
            Image.fromarray((mask * 255).astype(np.uint8)).resize(size, Image.NEAREST).save(root / "test" / folder / name)
    return root


def _vessels(rng, n=64, fraction=0.1):
    return rng.random((n, n)) < fraction


def test_identical_observers_score_one_and_disjoint_ones_zero(tmp_path):
    rng = np.random.default_rng(0)
    a = [_vessels(rng) for _ in range(3)]
    same = human_baseline.score(_drive(tmp_path / "same", a, a))
    assert same["n_images"] == 3 and same["mean_dice"] == pytest.approx(1.0)
    disjoint = human_baseline.score(_drive(tmp_path / "disjoint", a, [~m & (rng.random(m.shape) < 0.1) for m in a]))
    assert disjoint["mean_dice"] == pytest.approx(0.0)


def test_the_mean_is_over_images_of_the_resampled_masks(tmp_path):
    rng = np.random.default_rng(1)
    first = [_vessels(rng, fraction=f) for f in (0.05, 0.2)]
    # the second observer keeps half of the first's vessels on image 1 and all on image 2
    second = [first[0] & (rng.random(first[0].shape) < 0.5), first[1]]
    record = human_baseline.score(_drive(tmp_path, first, second))
    expected = []
    for k in ("01", "02"):
        a = human_baseline._resample(tmp_path / "test" / "1st_manual" / f"{k}_manual1.gif")
        b = human_baseline._resample(tmp_path / "test" / "2nd_manual" / f"{k}_manual2.gif")
        assert a.shape == (512, 512)
        expected.append(2 * (a & b).sum() / (a.sum() + b.sum()))
    assert record["per_image"]["02"] == pytest.approx(1.0)
    assert record["mean_dice"] == pytest.approx(np.mean(expected))
    assert record["template_dice_of_a_perfect_prediction"]["mean"] > 1  # see tests/test_dice_pitfall.py


def test_the_resampling_check_compares_with_the_course_masks(tmp_path):
    rng = np.random.default_rng(2)
    first = [_vessels(rng) for _ in range(2)]
    drive = _drive(tmp_path / "DRIVE", first, first)
    course = tmp_path / "retina" / "test" / "mask"
    course.mkdir(parents=True)
    for k in ("01", "02"):
        mask = human_baseline._resample(drive / "test" / "1st_manual" / f"{k}_manual1.gif")
        Image.fromarray((mask * 255).astype(np.uint8)).save(course / f"{k}_test.png")
    record = human_baseline.score(drive, tmp_path / "retina")
    assert record["resampling_check"] == {"course_masks": str(tmp_path / "retina"), "images": 2, "pixels_differing": 0}


def test_the_build_writes_the_log_beside_the_runs(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    first = [_vessels(rng) for _ in range(2)]
    drive = _drive(tmp_path / "DRIVE", first, first)
    out = tmp_path / "runs" / "human_baseline.json"
    build.write_human_baseline(drive, tmp_path / "runs")
    record = json.loads(out.read_text())
    assert record["mean_dice"] == pytest.approx(1.0) and record["n_images"] == 2
    assert {"command", "date", "machine", "drive"} <= set(record)
    with pytest.raises(build.UserError, match="1st_manual"):
        build.write_human_baseline(tmp_path / "nowhere", tmp_path / "runs")
