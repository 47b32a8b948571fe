"""The README's main command on a fresh clone without data leaves the committed records as
they are: a run still not made keeps its ``not_run.json`` (this machine's reason goes to
the console), and ``summary.json`` is rewritten only when a run's state changed."""
import json
import shutil
from pathlib import Path

import experiments
from medimg.runner import COMPLETE_MARKERS

ROOT = Path(__file__).resolve().parents[1]


def fresh_clone_runs(to):
    """``runs/cpu`` as a fresh clone has it, for the planner: the committed ``not_run.json``
    files and ``summary.json`` byte for byte, an empty stand-in for each finished run's results."""
    for folder in sorted((ROOT / "runs" / "cpu").iterdir()):
        if not folder.is_dir():
            continue
        for name in COMPLETE_MARKERS:
            if (folder / name).exists():
                (to / folder.name).mkdir(parents=True, exist_ok=True)
                (to / folder.name / name).write_text("{}")
        if (folder / "not_run.json").exists():
            (to / folder.name).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(folder / "not_run.json", to / folder.name / "not_run.json")
    shutil.copyfile(ROOT / "runs" / "cpu" / "summary.json", to / "summary.json")


def snapshot(root):
    return {p.relative_to(root): p.read_bytes() for p in root.rglob("*.json")}


def test_the_main_command_without_data_leaves_the_records_as_they_are(tmp_path, capsys, offline):
    root = tmp_path / "runs" / "cpu"
    fresh_clone_runs(root)
    committed = snapshot(root)
    assert any(name.name == "not_run.json" for name in committed)
    command = ["--profile", "cpu", "--data", str(tmp_path / "data" / "retina"), "--data_dir", str(tmp_path / "data"),
               "--runs", str(tmp_path / "runs"), "--no_estimate"]
    for _ in range(2):
        experiments.main(command)
        assert snapshot(root) == committed
    assert "not run" in capsys.readouterr().out  # this machine's reasons, said rather than written

    # a run with no record yet is recorded once, and the next invocation changes nothing
    (root / "mlp" / "not_run.json").unlink()
    summary = json.loads((root / "summary.json").read_text())
    del summary["runs"]["mlp"]
    (root / "summary.json").write_text(json.dumps(summary))
    experiments.main(command)
    after_first = snapshot(root)
    assert Path("mlp/not_run.json") in after_first
    assert json.loads(after_first[Path("summary.json")])["runs"]["mlp"].startswith("not run")
    experiments.main(command)
    assert snapshot(root) == after_first
