"""experiments.py: the run list, skipping finished runs, and honest 'not run' records."""
import json
import subprocess
import sys
from pathlib import Path

import experiments

ROOT = Path(__file__).resolve().parents[1]


def test_every_question_has_its_runs_in_both_profiles():
    for profile in experiments.PROFILES:
        runs = experiments.plan(profile, "data/retina", "data")
        assert {"convolution", "mlp", "mobilenet", "mobilenet_probs", "unet", "unet_noskip", "smp_pretrained",
                "smp_scratch"} <= set(runs)
        assert {f"lr_{lr}" for lr in ("1e-1", "1e-2", "1e-3", "1e-4", "1e-5")} <= set(runs)
        assert sum(name.startswith("aug_") for name in runs) >= 4


def test_gpu_profile_uses_the_assignments_hyperparameters():
    runs = experiments.plan("gpu", "data/retina", "data")
    for name, (script, arguments) in runs.items():
        for scaled in ("--crop_size", "--subset", "--epochs", "--image_size"):
            assert scaled not in arguments, (name, scaled)
    assert runs["lr_1e-3"][1][-4:] == ["--optimizer", "adam", "--lr", "1e-3"]


def test_later_arguments_override_the_profiles():
    import main_segmentation
    script, arguments = experiments.plan("cpu", "data/retina", "data")["lr_1e-5"]
    args = main_segmentation.parse_args([*arguments, "--logdir", "x"])
    assert args.lr == 1e-5 and args.optimizer == "adam" and args.crop_size == 128


def test_list_prints_one_command_per_run():
    out = subprocess.run([sys.executable, "experiments.py", "--profile", "gpu", "--list"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert len(out) == len(experiments.plan("gpu", "x", "y"))
    assert all(line.startswith("python experiments.py --profile gpu") and "--only" in line for line in out)


def test_a_run_this_machine_cannot_make_is_recorded_not_faked(tmp_path):
    # an unusable pathmnist.npz: the script says why in one line and exits 2, whatever the network
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "pathmnist.npz").write_bytes(b"not a zip file")
    logdir = tmp_path / "runs" / "cpu" / "mlp"
    state = experiments.run_one("mlp", "main_classification.py",
                                ["--data_dir", str(tmp_path / "data"), "--model", "mlp", "--device", "cpu"], logdir)
    assert state.startswith("not run")
    record = json.loads((logdir / "not_run.json").read_text())
    assert record["status"] == "not run" and "pathmnist.npz" in record["reason"]
    assert "main_classification.py" in record["command"]
    assert not (logdir / "results.json").exists()


def test_finished_runs_are_skipped(tmp_path):
    logdir = tmp_path / "done"
    logdir.mkdir()
    (logdir / "results.json").write_text("{}")
    assert experiments.run_one("unet", "main_segmentation.py", [], logdir) == "complete (skipped)"
