"""tools/thin_vessels.py: thin and thick vessels found, from a run's saved predictions, checked
on masks drawn by hand."""
import json

import numpy as np
import pytest
from PIL import Image

from medimg.cli import UserError
from medimg.figures import save_mask_pages
from tools import thin_vessels

SIZE = 64


def drawn_mask():
    """A line one pixel wide (16 pixels) and a bar four pixels wide (4 x 16 = 64 pixels)."""
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    mask[10, 20:36] = True
    mask[30:34, 20:36] = True
    return mask


def write_test_split(root, masks):
    for sub in ("image", "mask"):
        (root / "test" / sub).mkdir(parents=True)
    for k, mask in enumerate(masks):
        Image.new("RGB", (SIZE, SIZE), (200, 90, 40)).save(root / "test" / "image" / f"{k + 1:02d}_test.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(root / "test" / "mask" / f"{k + 1:02d}_test.png")
    return root


def write_run(folder, truths, predictions, dice_shift=0.0):
    """A finished run as main_segmentation.py leaves one: its per-image Dice, computed here by
    the formula 2|P & T| / (|P| + |T|), and its predictions as TIFF pages."""
    folder.mkdir(parents=True)
    dice = {f"{k + 1:02d}_test": 2 * float((p & t).sum()) / float(p.sum() + t.sum()) + dice_shift
            for k, (p, t) in enumerate(zip(predictions, truths))}
    folder.joinpath("results.json").write_text(json.dumps(
        {"config": {"image_size": 0}, "final_metrics": {"per_image_dice": dice}}))
    save_mask_pages(folder / "test_predictions.tif", predictions)
    return folder


def test_the_square_is_three_pixels_of_a_512_px_image_at_any_size():
    assert [thin_vessels.square_side(s, s) for s in (128, 256, 384, 512, 1024)] == [2, 2, 3, 3, 6]


def test_a_line_narrower_than_the_square_is_thin_and_a_wider_bar_thick():
    mask = drawn_mask()
    for side in (2, 3, 4):
        thin, thick = thin_vessels.split_by_width(mask, side)
        assert thin.sum() == 16 and thick.sum() == 64 and not (thin & thick).any()
        assert thin[10, 20:36].all() and thick[30:34, 20:36].all()
    thin, thick = thin_vessels.split_by_width(mask, 5)  # the bar is narrower than 5 px: all of it thin
    assert thin.sum() == 80 and thick.sum() == 0


def test_a_run_that_misses_the_line_finds_no_thin_vessel_of_that_image(tmp_path):
    truth = drawn_mask()
    data = write_test_split(tmp_path / "retina", [truth, truth])
    bar_only = truth.copy()
    bar_only[10] = False
    marks_more = truth.copy()
    marks_more[50:54, 50:54] = True  # 16 pixels where there is no vessel
    run = write_run(tmp_path / "run", [truth, truth], [bar_only, marks_more])
    thin_vessels.main([str(run), "--data", str(data)])
    measured = json.loads((run / "thin_vessels.json").read_text())
    first, second = measured["per_image"]["01_test"], measured["per_image"]["02_test"]
    assert (first["thin_recall"], first["thick_recall"], first["square"]) == (0.0, 1.0, 2)
    assert (second["thin_recall"], second["thick_recall"]) == (1.0, 1.0)
    assert first["precision"] == 1.0 and second["precision"] == pytest.approx(80 / 96)
    assert measured["thin_recall"] == pytest.approx(0.5) and measured["thin_share"] == pytest.approx(16 / 80)
    assert measured["precision"] == pytest.approx((64 + 80) / (64 + 96))  # pooled: vessel pixels marked / marked
    assert measured["command"].startswith("python -m tools.thin_vessels") and measured["machine"]["cpu_count"] >= 1
    # measured once: a second call leaves the file as it is
    before = (run / "thin_vessels.json").read_bytes()
    thin_vessels.main([str(run), "--data", str(data)])
    assert (run / "thin_vessels.json").read_bytes() == before


def test_predictions_that_do_not_reproduce_the_runs_dice_write_nothing(tmp_path):
    truth = drawn_mask()
    data = write_test_split(tmp_path / "retina", [truth, truth])
    good = write_run(tmp_path / "good", [truth, truth], [truth, truth])
    wrong = write_run(tmp_path / "wrong", [truth, truth], [truth, truth], dice_shift=-0.01)
    with pytest.raises(UserError, match="does not reproduce the run's Dice"):
        thin_vessels.main([str(good), str(wrong), "--data", str(data)])
    assert not (good / "thin_vessels.json").exists() and not (wrong / "thin_vessels.json").exists()
    with pytest.raises(UserError, match="holds 1 test images"):
        thin_vessels.main([str(good), "--data", str(write_test_split(tmp_path / "other", [truth]))])


def test_a_run_that_marks_nothing_finds_nothing_and_has_no_precision(tmp_path):
    truth = drawn_mask()
    data = write_test_split(tmp_path / "retina", [truth])
    run = write_run(tmp_path / "run", [truth], [np.zeros_like(truth)])
    thin_vessels.main([str(run), "--data", str(data)])
    measured = json.loads((run / "thin_vessels.json").read_text())
    assert (measured["thin_recall"], measured["thick_recall"], measured["precision"]) == (0.0, 0.0, None)
    assert measured["per_image"]["01_test"]["precision"] is None
