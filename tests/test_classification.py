"""main_classification.py end to end on a generated PathMNIST-format file (conftest.py)."""
import json

import numpy as np
import pytest
import torch
from conftest import assert_picture, interrupt_at_epoch, write_pathmnist

import main_classification as cls
from medimg.classification_models import Scores
from mobileNet import MobileNet

FAST = ["--epochs", "1", "--batch_size", "32", "--num_workers", "0", "--print_every", "1000"]


def run(data_dir, logdir, *extra):
    cls.main(["--logdir", str(logdir), "--data_dir", str(data_dir), *FAST, *extra])
    return json.loads((logdir / "results.json").read_text())


def check_results(results):
    for key in ("train_losses", "valid_losses", "train_accs", "valid_accs"):
        assert len(results[key]) == results["config"]["epochs"] and all(np.isfinite(results[key])), key
    assert np.isfinite(results["test_loss"]) and 0 <= results["test_acc"] <= 1
    confusion = np.array(results["confusion_matrix"])
    assert confusion.shape == (9, 9)
    if (confusion.sum(1) > 0).all():
        assert 0 <= results["test_auc"] <= 1
    else:  # AUC is undefined when a class is absent from the test set
        assert results["test_auc"] is None
    assert np.sum(results["confusion_matrix"]) == results["n_samples"]["test"]
    assert {"command", "config", "machine", "versions", "timings", "test_at_best_epoch"} <= set(results)


@pytest.mark.parametrize("model", ["mlp", "mobilenet"])
def test_one_epoch_of_each_model(pathmnist_dir, tmp_path, model):
    results = run(pathmnist_dir, tmp_path / model, "--model", model)
    check_results(results)
    assert results["n_samples"] == {"train": 180, "val": 60, "test": 60}
    assert_picture(tmp_path / model / "curves.png")
    assert_picture(tmp_path / model / "confusion.png")


def test_the_mlp_learns_the_synthetic_classes(pathmnist_dir, tmp_path):
    results = run(pathmnist_dir, tmp_path / "learn", "--model", "mlp", "--epochs", "3")
    assert results["train_losses"][-1] < results["train_losses"][0]
    assert results["test_acc"] > 0.8  # chance is 1/9


def test_subset(pathmnist_dir, tmp_path):
    results = run(pathmnist_dir, tmp_path / "subset", "--model", "mobilenet", "--subset", "50")
    check_results(results)
    assert results["n_samples"] == {"train": 50, "val": 50, "test": 50}


def test_scores_are_logits_unless_the_templates_behaviour_is_asked_for():
    model = MobileNet(9).eval()
    x = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(Scores(model)(x), model.forward_logits(x))
        torch.testing.assert_close(Scores(model, probabilities=True)(x), model(x))


def test_missing_file_offline_gives_one_clear_line(offline, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cls.run_cli(lambda: cls.main(["--logdir", str(tmp_path / "run"), "--data_dir", str(tmp_path / "empty")]))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert str(tmp_path / "empty" / "pathmnist.npz") in err and "zenodo" in err
    assert not (tmp_path / "run" / "results.json").exists()


def test_corrupt_file_gives_one_clear_line(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "pathmnist.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(SystemExit) as exit_info:
        cls.run_cli(lambda: cls.main(["--logdir", str(tmp_path / "run"), "--data_dir", str(tmp_path / "data")]))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pathmnist.npz" in err and "download" in err


def test_wrong_image_shape_is_refused(tmp_path, capsys):
    write_pathmnist(tmp_path / "data" / "pathmnist.npz", image_size=20)
    with pytest.raises(SystemExit):
        cls.run_cli(lambda: cls.main(["--logdir", str(tmp_path / "run"), "--data_dir", str(tmp_path / "data")]))
    assert "(28, 28, 3)" in capsys.readouterr().err


def test_resume_after_an_interruption(pathmnist_dir, tmp_path, monkeypatch):
    # one execution for both runs (a measured choice may differ between them); that a resumed
    # run keeps its own is tests/test_segmentation.py's test_a_resumed_run_keeps_the_execution_it_chose
    argv = ["--model", "mlp", "--epochs", "3", "--plain"]
    straight = run(pathmnist_dir, tmp_path / "straight", *argv)
    restore = interrupt_at_epoch(monkeypatch, cls, 2)
    with pytest.raises(KeyboardInterrupt):
        run(pathmnist_dir, tmp_path / "resumed", *argv)
    assert (tmp_path / "resumed" / "checkpoint.pt").exists()
    restore()
    resumed = run(pathmnist_dir, tmp_path / "resumed", *argv, "--resume")
    assert resumed["resumed_at_epoch"] == 2 and len(resumed["train_losses"]) == 3
    assert resumed["train_losses"] == straight["train_losses"]  # bit for bit
    assert not (tmp_path / "resumed" / "checkpoint.pt").exists()


@pytest.mark.parametrize("flag,value", [(flag, value) for flag, smallest in
                                        [("--batch_size", 1), ("--epochs", 1), ("--lr", None), ("--weight_decay", 0),
                                         ("--print_every", 1), ("--seed", 0), ("--subset", 0), ("--num_workers", 0)]
                                        for value in ("0", "-1", "nan") if not (value == "0" and smallest == 0)])
def test_bad_numeric_flags_give_one_line_and_create_nothing(pathmnist_dir, tmp_path, capsys, flag, value):
    with pytest.raises(SystemExit) as exit_info:
        cls.run_cli(lambda: cls.main(["--logdir", str(tmp_path / "run"), "--data_dir", str(pathmnist_dir),
                                      flag, value]))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1 and flag in err, err
    assert not (tmp_path / "run").exists()


def test_cross_entropy_on_probabilities_cannot_go_below_its_floor(pathmnist_dir, tmp_path):
    """Softmax then cross-entropy (the template's literal behaviour) is bounded below by
    log(1 + 8/e) = 1.372 for 9 classes, however well the model classifies; on logits the
    same training goes far below it."""
    floor = np.log(1 + 8 / np.e)
    on_logits = run(pathmnist_dir, tmp_path / "logits", "--model", "mlp", "--epochs", "3")
    on_probs = run(pathmnist_dir, tmp_path / "probs", "--model", "mlp", "--epochs", "3", "--loss_on_probabilities")
    assert on_logits["train_losses"][-1] < floor - 0.3
    assert all(loss >= floor - 1e-4 for loss in on_probs["train_losses"] + on_probs["valid_losses"])
    assert on_probs["test_acc"] > 0.5  # it still learns to classify: only the loss is floored


def test_plain_and_compile(pathmnist_dir, tmp_path):
    # batches of 30 divide the splits (180, 60, 60): no last, shorter batch for torch.compile to
    # compile again for dynamic shapes (a third compilation, 15 s more on two cores)
    results = run(pathmnist_dir, tmp_path / "compiled", "--model", "mlp", "--plain", "--compile", "--batch_size", "30")
    check_results(results)
    assert results["execution"] == {"device": "cpu", "autocast": None, "channels_last": False,
                                    "selection": {"chosen": "plain", "how": "--plain"}}
    assert results["config"]["compile"] is True
