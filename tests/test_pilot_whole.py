"""tools/pilot_whole.py: the whole-image setting judged from the plan's first runs, on held-out
eyes only."""
import json

import pytest
from conftest import write_retina

from medimg.cli import UserError
from tools import pilot_whole


def fake_run(folder, held_out, train_eyes, epochs=50, evaluated_on="validation"):
    folder.mkdir(parents=True, exist_ok=True)
    evaluated = list(range(epochs // 10, epochs + 1, epochs // 10))
    folder.joinpath("results.json").write_text(json.dumps({
        "evaluated_on": evaluated_on, "config": {"epochs": epochs}, "evaluated_epochs": evaluated,
        "valid_dice_thresholded": held_out, "train_whole_dice_thresholded": train_eyes,
        "baselines": {"evaluation_all_vessel_dice": 0.15},
        "test_dice_never_read": None, "code_fingerprint": {"sha256": "ab" * 32}, "timings": {"total_seconds": 1.0}}))


def make_pilot(root, unet_exit=3, gap=0.1, before=0.0, gap43=None):
    for seed, suffix in ((42, ""), (43, "_seed43")):
        late = [before] * (unet_exit - 1) + [0.3] * (11 - unet_exit)
        fake_run(root / f"unet{suffix}", late, late)
        fake_run(root / f"unet_noskip{suffix}", [0.0] * 10, [0.0] * 10)
        end = 0.6 + (0.01 if seed == 43 else 0)
        this_gap = gap43 if seed == 43 and gap43 is not None else gap + (0.01 if seed == 43 else 0)
        fake_run(root / f"aug_none{suffix}", [0.2] * 9 + [end], [0.2] * 9 + [end + this_gap], epochs=200)


def test_the_pilot_chooses_only_when_both_rules_hold(tmp_path):
    data = write_retina(tmp_path / "retina", size=64)
    make_pilot(tmp_path / "runs")
    pilot_whole.main(["--runs", str(tmp_path / "runs"), "--data", str(data)])
    choice = json.loads((tmp_path / "runs" / "pilot_whole" / "choice.json").read_text())
    verdict = choice["candidates"]["whole 256 px"]
    assert choice["chosen"] == "whole images at 256 px" and verdict["a_reference_leaves_in_time"]
    assert verdict["noskip_leaves_plateau"] == [False, False] and verdict["augmentation_seeds"] == 3
    assert verdict["mean_gap_without_augmentation"] == pytest.approx(0.105)
    assert 0 < choice["thin_vessels"]["vessel_pixels_kept"] <= 1 and choice["thin_vessels"]["masks"] == 6
    # the reference UNet leaving at epoch 25 of 50 (evaluation 5 of 10) is too late, and so is one
    # that first predicts every pixel a vessel (the all-vessel Dice, 0.15, is no exit); no gap fails (b)
    for late, gap, before, rule in ((6, 0.1, 0.0, "a_reference_leaves_in_time"),
                                    (6, 0.1, 0.15, "a_reference_leaves_in_time"), (3, 0.0, 0.0, "b_gap_to_close")):
        root = tmp_path / f"runs_{late}_{gap}_{before}"
        make_pilot(root, unet_exit=late, gap=gap, before=before)
        pilot_whole.main(["--runs", str(root), "--data", str(data)])
        choice = json.loads((root / "pilot_whole" / "choice.json").read_text())
        assert choice["chosen"] is None and not choice["candidates"]["whole 256 px"][rule]


def test_the_pilot_refuses_runs_of_another_setting(tmp_path):
    data = write_retina(tmp_path / "retina", size=64)
    make_pilot(tmp_path / "runs")
    (tmp_path / "runs" / "unet" / "results.json").unlink()
    with pytest.raises(UserError, match="not made yet"):
        pilot_whole.main(["--runs", str(tmp_path / "runs"), "--data", str(data)])
    fake_run(tmp_path / "runs" / "unet", [0.3] * 10, [0.3] * 10, evaluated_on="test")
    with pytest.raises(UserError, match="another setting"):
        pilot_whole.main(["--runs", str(tmp_path / "runs"), "--data", str(data)])


def test_a_gap_the_seeds_disagree_on_is_no_gap(tmp_path):
    """(b) compares the mean gap with the gaps' own spread: gaps of 0.0 and 0.2 average 0.1, but the
    seeds disagree by more than that (the held-out Dice alone spreads by only 0.007)."""
    data = write_retina(tmp_path / "retina", size=64)
    make_pilot(tmp_path / "runs", gap=0.0, gap43=0.2)
    pilot_whole.main(["--runs", str(tmp_path / "runs"), "--data", str(data)])
    verdict = json.loads((tmp_path / "runs" / "pilot_whole" / "choice.json").read_text())["candidates"]["whole 256 px"]
    assert verdict["mean_gap_without_augmentation"] == pytest.approx(0.1) and not verdict["b_gap_to_close"]


def test_a_run_made_on_patches_is_refused_by_its_configuration(tmp_path):
    data = write_retina(tmp_path / "retina", size=64)
    make_pilot(tmp_path / "runs")
    results = tmp_path / "runs" / "unet_noskip_seed43" / "results.json"
    run = json.loads(results.read_text())
    run["config"].update(image_size=0, crop_size=128)
    results.write_text(json.dumps(run))
    with pytest.raises(UserError, match="image_size 0, planned 256"):
        pilot_whole.main(["--runs", str(tmp_path / "runs"), "--data", str(data)])
