"""main_segmentation.py end to end on generated vessel images (tests/conftest.py)."""
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import main_segmentation as seg
import retina as retina_data
from segmentation_metrics import pixel_metrics, thresholded_dice
from conftest import write_retina
from segmentation_models import build_smp_unet

FAST = ["--epochs", "1", "--batch_size", "2", "--crop_size", "32", "--threads", "2"]


def run(retina, logdir, *extra):
    seg.main(["--dataset", str(retina), "--logdir", str(logdir), *FAST, *extra])
    return json.loads((logdir / "results.json").read_text())


def check_results(results):
    for key in ("train_losses", "valid_losses", "train_accs", "valid_accs", "valid_dice_thresholded"):
        assert len(results[key]) >= 1 and all(np.isfinite(results[key])), key
    assert set(results["final_metrics"]) >= {"dice", "accuracy", "sensitivity", "specificity", "auc"}
    assert 0 <= results["final_metrics"]["dice"] <= 1 and 0 <= results["final_metrics"]["accuracy"] <= 1
    assert results["diverged"] is False
    assert results["command"].startswith("python") and "--dataset" in results["command"]
    assert {"config", "machine", "versions", "timings"} <= set(results)


@pytest.mark.parametrize("model", ["unet", "unet_noskip"])
def test_one_epoch_of_each_unet_variant(retina, tmp_path, model):
    results = run(retina, tmp_path / model, "--model", model)
    check_results(results)
    assert results["config"]["model"] == model
    assert (tmp_path / model / "curves.png").stat().st_size > 0
    assert (tmp_path / model / "predictions.png").stat().st_size > 0
    assert not (tmp_path / model / "checkpoint.pt").exists()


def test_one_epoch_of_the_smp_unet_from_scratch(retina, tmp_path):
    results = run(retina, tmp_path / "smp", "--model", "smp_unet", "--encoder_weights", "none")
    check_results(results)
    assert results["n_parameters"] > 14e6  # resnet18 encoder + UNet decoder


def test_smp_unet_loads_a_torchvision_resnet18_state_dict(retina, tmp_path):
    import torchvision
    weights = torchvision.models.resnet18(weights=None)
    torch.nn.init.constant_(weights.conv1.weight, 0.01)
    torch.save(weights.state_dict(), tmp_path / "resnet18.pth")
    model, record = build_smp_unet("resnet18", str(tmp_path / "resnet18.pth"))
    torch.testing.assert_close(model.net.encoder.conv1.weight, weights.conv1.weight)
    assert record["tensors_loaded"] == 100 and len(record["sha256"]) == 64  # resnet18 without fc: 100 tensors


def test_smp_imagenet_weights_offline_fail_fast_with_a_hint(offline, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    with pytest.raises(seg.UserError, match="--encoder_weights PATH") as err:
        build_smp_unet("resnet18", "imagenet")
    assert "--encoder efficientnet-lite0" in str(err.value)


@pytest.mark.parametrize("augmentation", [s for s in retina_data.STRATEGIES if s != "none"])
def test_one_epoch_with_each_augmentation(retina, tmp_path, augmentation):
    check_results(run(retina, tmp_path / augmentation, "--augmentation", augmentation))


@pytest.mark.parametrize("augmentation", list(retina_data.STRATEGIES))
def test_augmentation_keeps_the_mask_binary_and_aligned(augmentation):
    # The vessels are drawn into the image's blue channel: after any transform, the
    # mask must still sit where the image says the vessels are.
    rng = np.random.default_rng(3)
    mask = np.zeros((96, 96), dtype=np.uint8)
    mask[20:76, 40:44] = 1
    mask[60:64, 10:86] = 1
    mask[rng.integers(0, 96, 40), rng.integers(0, 96, 40)] = 1
    image = np.stack([np.full_like(mask, 120), np.full_like(mask, 60), mask * 255]).astype(np.uint8)
    dataset = retina_data.RetinaTrainSet(torch.from_numpy(image)[None], torch.from_numpy(mask)[None, None], augmentation)
    torch.manual_seed(0)
    for _ in range(8):
        x, y = dataset[0]
        assert x.shape == (3, 96, 96) and y.shape == (1, 96, 96)
        assert set(torch.unique(y).tolist()) <= {0.0, 1.0}
        if augmentation != "color":  # colour jitter moves the blue channel; nothing geometric happens
            from_image = x[2] > 0.5
            disagreement = (from_image != y[0].bool()).float().mean().item()
            assert disagreement < 0.02, disagreement
        else:
            torch.testing.assert_close(y[0], torch.from_numpy(mask).float())


def test_random_crops_stay_aligned():
    image = torch.arange(64 * 64, dtype=torch.float32).view(1, 64, 64).repeat(3, 1, 1)
    mask = (torch.arange(64 * 64).view(1, 64, 64) % 7 == 0).to(torch.uint8)
    dataset = retina_data.RetinaTrainSet((image % 256).to(torch.uint8)[None], mask[None], "none", crop_size=16,
                                 crops_per_image=3)
    assert len(dataset) == 3
    for i in range(3):
        x, y = dataset[i]
        top_left = int(round(x[0, 0, 0].item() * 255))
        # locate the crop through the mask pattern: it must equal the mask's window
        found = [(t, l) for t in range(49) for l in range(49)
                 if torch.equal(mask[0, t:t + 16, l:l + 16].float(), y[0])
                 and int(image[0, t, l].item()) % 256 == top_left]
        assert found


def test_validation_split_keeps_copies_of_one_eye_together():
    names = [f"{21 + f}_training_{k}" for f in range(10) for k in range(4)]
    train, val = retina_data.split_by_fundus(names, 0.2, seed=1)
    assert len(val) == 8 and len(train) == 32
    assert {retina_data.fundus_id(names[i]) for i in train}.isdisjoint({retina_data.fundus_id(names[i]) for i in val})


def test_run_with_a_validation_split_selects_the_best_epoch(retina, tmp_path):
    results = run(retina, tmp_path / "val", "--val_fraction", "0.34", "--epochs", "2")
    assert results["evaluated_on"] == "validation" and results["final_metrics_model"] == "best validation epoch"
    assert results["n_train_images"] == 4 and results["best_epoch"] in (1, 2)


def test_pairs_are_matched_by_name_not_position_and_any_format(tmp_path):
    root = write_retina(tmp_path / "data", n_train_fundi=2, copies=1)
    # a mask in GIF named like DRIVE's annotations, an image in TIFF
    Image.open(root / "train" / "image" / "22_training_0.png").save(root / "train" / "image" / "22_training_0.tif")
    (root / "train" / "image" / "22_training_0.png").unlink()
    Image.open(root / "train" / "mask" / "22_training_0.png").save(root / "train" / "mask" / "22_training_0_manual1.gif")
    (root / "train" / "mask" / "22_training_0.png").unlink()
    names, images, masks, sizes = retina_data.load_split(root / "train")
    assert names == ["21_training_0", "22_training_0"]
    expected = np.asarray(Image.open(root / "train" / "mask" / "22_training_0_manual1.gif").convert("L")) > 127
    np.testing.assert_array_equal(masks[1, 0].numpy(), expected)
    assert images.dtype == torch.uint8 and set(torch.unique(masks).tolist()) <= {0, 1}


def test_sizes_not_divisible_by_16_are_padded_and_metrics_ignore_the_padding(tmp_path):
    root = write_retina(tmp_path / "odd", n_train_fundi=1, copies=1, n_test=1, size=50)
    names, images, masks, sizes = retina_data.load_split(root / "test")
    assert images.shape[-2:] == (64, 64) and sizes == [(50, 50)]
    seg.main(["--dataset", str(root), "--logdir", str(tmp_path / "run"), *FAST])


def _expect_one_line_error(capsys, argv, *needles):
    capsys.readouterr()  # drop what earlier calls printed
    with pytest.raises(SystemExit) as exit_info:
        seg.run_cli(lambda: seg.main(argv))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err


def test_bad_inputs_give_one_clear_line_and_exit_2(tmp_path, capsys):
    root = write_retina(tmp_path / "data", n_train_fundi=2, copies=1)
    argv = ["--dataset", str(root), "--logdir", str(tmp_path / "run"), *FAST]

    shutil.rmtree(root / "test" / "mask")
    _expect_one_line_error(capsys, argv, str(root / "test" / "mask"), "not found")
    write_retina(tmp_path / "fresh", n_train_fundi=2, copies=1)
    shutil.copytree(tmp_path / "fresh" / "test" / "mask", root / "test" / "mask")

    (root / "train" / "mask" / "22_training_0.png").rename(root / "train" / "mask" / "99_training_0.png")
    _expect_one_line_error(capsys, argv, "22_training_0", "no partner")
    (root / "train" / "mask" / "99_training_0.png").rename(root / "train" / "mask" / "22_training_0.png")

    (root / "train" / "image" / "21_training_0.png").write_bytes(b"not a png")
    _expect_one_line_error(capsys, argv, "21_training_0.png", "cannot read")
    Image.new("RGB", (48, 64)).save(root / "train" / "image" / "21_training_0.png")
    _expect_one_line_error(capsys, argv, "21_training_0.png", "48x64", "same size")

    _expect_one_line_error(capsys, ["--dataset", str(tmp_path / "nowhere"), "--logdir", str(tmp_path / "r2")],
                           "nowhere", "train/image")
    assert not (tmp_path / "run" / "results.json").exists()


def test_an_existing_run_is_never_overwritten(retina, tmp_path, capsys):
    run(retina, tmp_path / "run")
    before = (tmp_path / "run" / "results.json").read_bytes()
    _expect_one_line_error(capsys, ["--dataset", str(retina), "--logdir", str(tmp_path / "run"), *FAST],
                           "already holds a run", "--resume")
    assert (tmp_path / "run" / "results.json").read_bytes() == before
    seg.main(["--dataset", str(retina), "--logdir", str(tmp_path / "run"), *FAST, "--resume"])  # complete: no-op
    assert (tmp_path / "run" / "results.json").read_bytes() == before


def test_divergence_stops_cleanly_and_records_the_history(retina, tmp_path, monkeypatch):
    real_train = seg.train

    def exploding_from_epoch_2(epoch, model, loader, optimizer, scaler, loss_fn, *rest):
        if epoch >= 2:  # the loss of every step of the third epoch is NaN
            loss_fn = lambda logits, targets, real=loss_fn: real(logits, targets) * float("nan")
        return real_train(epoch, model, loader, optimizer, scaler, loss_fn, *rest)

    monkeypatch.setattr(seg, "train", exploding_from_epoch_2)
    results = run(retina, tmp_path / "nan", "--epochs", "5", "--crops_per_image", "2")
    assert results["diverged"] is True
    assert results["epochs_completed"] == 2 and len(results["train_losses"]) == 2
    # the NaN steps were skipped: the final metrics come from the last finite weights
    assert np.isfinite(results["final_metrics"]["loss"]) and results["final_metrics"]["auc"] is not None
    assert not (tmp_path / "nan" / "checkpoint.pt").exists()


def test_resume_after_an_interruption_continues_where_it_stopped(retina, tmp_path, monkeypatch):
    argv = ["--dataset", str(retina), *FAST, "--epochs", "3"]
    seg.main([*argv, "--logdir", str(tmp_path / "straight")])
    straight = json.loads((tmp_path / "straight" / "results.json").read_text())

    real_train = seg.train

    def interrupted(epoch, *args, **kwargs):
        if epoch == 2:
            raise KeyboardInterrupt
        return real_train(epoch, *args, **kwargs)

    monkeypatch.setattr(seg, "train", interrupted)
    with pytest.raises(KeyboardInterrupt):
        seg.main([*argv, "--logdir", str(tmp_path / "resumed")])
    assert (tmp_path / "resumed" / "checkpoint.pt").exists() and not (tmp_path / "resumed" / "results.json").exists()
    monkeypatch.setattr(seg, "train", real_train)
    seg.main([*argv, "--logdir", str(tmp_path / "resumed"), "--resume"])
    resumed = json.loads((tmp_path / "resumed" / "results.json").read_text())
    assert resumed["resumed_at_epoch"] == 2
    np.testing.assert_allclose(resumed["train_losses"], straight["train_losses"], rtol=1e-4)
    np.testing.assert_allclose(resumed["final_metrics"]["soft_dice"], straight["final_metrics"]["soft_dice"], rtol=1e-3)


def test_augmentations_figure(retina, tmp_path):
    run(retina, tmp_path / "fig", "--show_augmentations", "2")
    assert (tmp_path / "fig" / "augmentations.png").stat().st_size > 0


def test_binary_dice_and_pixel_metrics_against_sklearn():
    from sklearn.metrics import f1_score, roc_auc_score
    rng = np.random.default_rng(0)
    truth = rng.random((40, 40)) > 0.8
    probs = np.clip(truth * 0.6 + rng.random((40, 40)) * 0.5, 0, 1)
    assert thresholded_dice(torch.from_numpy(probs >= 0.5), torch.from_numpy(truth)) == \
        pytest.approx(f1_score(truth.ravel(), probs.ravel() >= 0.5))
    metrics = pixel_metrics([probs], [truth])
    assert metrics["auc"] == pytest.approx(roc_auc_score(truth.ravel(), probs.ravel()))
    pred = probs >= 0.5
    assert metrics["sensitivity"] == pytest.approx((pred & truth).sum() / truth.sum())
    assert metrics["specificity"] == pytest.approx((~pred & ~truth).sum() / (~truth).sum())
