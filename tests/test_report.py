"""report/build.py on the committed run logs: it builds, every number it writes comes from
the logs, the registry is its only list of runs, and a claim the logs contradict stops it."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import experiments
from medimg import registry
from report import build, logs

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def committed_runs(tmp_path):
    """A copy of the committed logs (runs/cpu, and runs/gpu beside it), without the large figures."""
    for profile in ("cpu", "gpu"):
        if (ROOT / "runs" / profile).is_dir():
            shutil.copytree(ROOT / "runs" / profile, tmp_path / "runs" / profile,
                            ignore=shutil.ignore_patterns("*.pt", "log.txt"))
    return tmp_path / "runs" / "cpu"


def test_the_report_builds_from_the_committed_logs(committed_runs, tmp_path):
    build.main(["--runs", str(committed_runs), "--out", str(tmp_path / "report.pdf")])
    assert (tmp_path / "report.pdf").read_bytes()[:5] == b"%PDF-"
    numbers = json.loads((ROOT / "report" / "generated" / "numbers.json").read_text())
    cited = {row["name"]: row.get("dice") for row in numbers["seg_rows"]}
    for name, run in registry.runs().items():
        results = committed_runs / name / "results.json"
        if run.script == "main_segmentation.py" and results.exists():
            # every finished run's final thresholded Dice is in the table, to three decimals
            assert cited[name] == f"{json.loads(results.read_text())['final_metrics']['dice']:.3f}"
    # ... and every seed copy's in the augmentation table, every run of the other profile's in its table
    by_seed = " ".join(row["runs"] for row in numbers["p4_3"]["rows"])
    for results in committed_runs.glob("aug_*_seed*/results.json"):
        assert f"{json.loads(results.read_text())['final_metrics']['dice']:.3f}" in by_seed
    other = {row["name"]: row["dice"] for row in numbers["other_profile"].get("rows", [])}
    for results in (committed_runs.parent / "gpu").glob("*/results.json"):
        assert other[results.parent.name] == f"{json.loads(results.read_text())['final_metrics']['dice']:.3f}"


def test_the_registry_is_the_only_list_of_runs(monkeypatch, tmp_path, capsys):
    real = registry.runs

    def with_one_more(profile="cpu"):
        runs = real(profile)
        runs["lr_3e-4"] = registry.Run("lr_3e-4", "4.2", "main_segmentation.py",
                                          ("--optimizer", "adam", "--lr", "3e-4"), "Adam, lr 3e-4")
        return runs

    monkeypatch.setattr(registry, "runs", with_one_more)
    experiments.main(["--profile", "cpu", "--list"])
    assert "--only lr_3e-4" in capsys.readouterr().out
    (tmp_path / "cpu").mkdir()
    runs = logs.load_runs(tmp_path / "cpu")
    assert "lr_3e-4" in runs and runs["lr_3e-4"]["status"] == "not run"
    assert "lr_3e-4" in registry.runs_of("4.2")


def test_a_claim_the_logs_contradict_stops_the_build(committed_runs, tmp_path):
    if not all((committed_runs / name / "results.json").exists() for name in registry.runs_of("4.2")):
        pytest.skip("the learning-rate sweep is not complete among the runs")
    results = committed_runs / "lr_1e-1" / "results.json"
    record = json.loads(results.read_text())
    record["train_losses"] = [0.5] * len(record["train_losses"])  # as if 1e-1 had not diverged
    results.write_text(json.dumps(record))
    (tmp_path / "old.pdf").write_bytes(b"%PDF- the previous report")
    with pytest.raises(build.UserError, match="lr 1e-1 diverges"):
        build.main(["--runs", str(committed_runs), "--out", str(tmp_path / "old.pdf")])
    assert (tmp_path / "old.pdf").read_bytes() == b"%PDF- the previous report"


def test_budget_states_what_a_caption_needs():
    run = {"config": {"crop_size": 128, "crops_per_image": 4, "batch_size": 8, "lr": 1e-3, "optimizer": "adamw"},
           "n_train_images": 80, "epochs_completed": 10, "execution": {"autocast": "bfloat16"}, "machine": {}}
    assert logs.budget(run) == {"what": "128-px crops of 80 images, 4 per image per epoch", "batch": 8,
                                "epochs": 10, "steps": 400, "precision": "bfloat16", "lr": 1e-3,
                                "optimizer": "adamw"}


def _seg_run(folder, dice, seed=42):
    """A finished segmentation run's record, as far as problem_4_3 reads it."""
    return {"status": "done", "folder": str(folder), "final_metrics": {"dice": dice, "auc": 0.9},
            "config": {"seed": seed, "crop_size": 0, "batch_size": 2, "lr": 1e-4, "optimizer": "adamw", "epochs": 10},
            "n_train_images": 80, "epochs_completed": 10, "execution": {"autocast": None}, "machine": {},
            "valid_dice_thresholded": [dice], "evaluated_epochs": [10], "train_losses": [0.5] * 10}


def test_the_augmentation_verdict_uses_the_seed_to_seed_spread(tmp_path):
    from report import answers
    values = {"none": [0.70, 0.72], "flip": [0.80, 0.82], "affine": [0.69, 0.73], "color": [0.50, 0.54],
              "elastic": [0.71, 0.71], "combined": [0.70, 0.74]}
    runs = {"unet": _seg_run(tmp_path, 0.7)}
    for name, (first, second) in values.items():
        runs[f"aug_{name}"] = _seg_run(tmp_path, first)
        runs[f"aug_{name}_seed1"] = _seg_run(tmp_path, second, seed=1)
    for name in registry.runs():
        runs.setdefault(name, {"status": "not run"})
    numbers = answers.problem_4_3(runs)["numbers"]
    # pooled standard deviation of pairs: sqrt(mean of (a - b)^2 / 2)
    pooled = np.sqrt(np.mean([(a - b) ** 2 / 2 for a, b in values.values()]))
    assert numbers["noise"]["kind"] == "seeds" and float(numbers["noise"]["sd"]) == pytest.approx(pooled, abs=1e-3)
    verdicts = {row["name"]: row["verdict"] for row in numbers["rows"]}
    # threshold 2 * s * sqrt(1/2 + 1/2) = 2 s: about 0.030 here
    assert verdicts == {"flip": "better", "color": "worse", "affine": "within noise", "elastic": "within noise",
                        "combined": "within noise", "none": "baseline"}
    assert numbers["seeds"] == [1, 42] and not numbers["baseline_is_reference"]


def test_prediction_panels_zoom_on_thin_vessels_and_name_the_runs_without_masks(tmp_path):
    from medimg.figures import save_mask_png
    from report import plots
    truth = np.zeros((128, 160), bool)
    truth[10:40, 10:40] = True  # a thick blob: no thin vessel
    truth[100, 96:150] = True  # a one-pixel vessel
    runs = {}
    for name, prediction in (("aug_none", truth), ("unet_noskip", np.zeros_like(truth))):
        folder = tmp_path / name
        save_mask_png(folder / "example_01_test_truth.png", truth)
        save_mask_png(folder / "example_01_test_prediction.png", prediction)
        runs[name] = {"status": "done", "folder": str(folder)}
    runs["lr_1e-3"] = {"status": "done", "folder": str(tmp_path / "old_run")}  # made before the masks
    top, left = plots.thin_vessel_window(truth, size=64)
    assert top <= 100 < top + 64 and left <= 96 and left + 64 > 110
    drawn, image = plots.prediction_panels(runs, ["aug_none", "unet_noskip", "lr_1e-3"], tmp_path / "panel.png")
    assert drawn == ["aug_none", "unet_noskip"] and image == "01_test"
    from conftest import assert_picture
    assert_picture(tmp_path / "panel.png", min_colours=3)
