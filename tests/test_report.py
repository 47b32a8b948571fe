"""report/build.py on the committed run logs: it builds, every number it writes comes from
the logs, the registry is its only list of runs, and a claim the logs contradict stops it."""
import json
import shutil
import sys
from pathlib import Path

import pytest

import experiments

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "report"))

import build  # noqa: E402
import logs  # noqa: E402


@pytest.fixture
def committed_runs(tmp_path):
    """A copy of the committed logs (runs/cpu), without the large figures."""
    copy = tmp_path / "runs" / "cpu"
    shutil.copytree(ROOT / "runs" / "cpu", copy, ignore=shutil.ignore_patterns("*.pt", "log.txt"))
    return copy


def test_the_report_builds_from_the_committed_logs(committed_runs, tmp_path):
    build.main(["--runs", str(committed_runs), "--out", str(tmp_path / "report.pdf")])
    assert (tmp_path / "report.pdf").read_bytes()[:5] == b"%PDF-"
    numbers = json.loads((ROOT / "report" / "generated" / "numbers.json").read_text())
    cited = {row["name"]: row.get("dice") for row in numbers["seg_rows"]}
    for name, run in experiments.registry().items():
        results = committed_runs / name / "results.json"
        if run.script == "main_segmentation.py" and results.exists():
            # every finished run's final thresholded Dice is in the table, to three decimals
            assert cited[name] == f"{json.loads(results.read_text())['final_metrics']['dice']:.3f}"


def test_the_registry_is_the_only_list_of_runs(monkeypatch, tmp_path, capsys):
    real = experiments.registry

    def with_one_more(profile="cpu"):
        runs = real(profile)
        runs["lr_3e-4"] = experiments.Run("lr_3e-4", "4.2", "main_segmentation.py",
                                          ("--optimizer", "adam", "--lr", "3e-4"), "Adam, lr 3e-4")
        return runs

    monkeypatch.setattr(experiments, "registry", with_one_more)
    experiments.main(["--profile", "cpu", "--list"])
    assert "--only lr_3e-4" in capsys.readouterr().out
    (tmp_path / "cpu").mkdir()
    runs = logs.load_runs(tmp_path / "cpu")
    assert "lr_3e-4" in runs and runs["lr_3e-4"]["status"] == "not run"
    assert "lr_3e-4" in experiments.runs_of("4.2")


def test_a_claim_the_logs_contradict_stops_the_build(committed_runs, tmp_path):
    results = committed_runs / "lr_1e-1" / "results.json"
    if not results.exists():
        pytest.skip("the learning-rate sweep is not among the committed runs")
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
