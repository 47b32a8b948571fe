"""main_segmentation.py end to end on generated vessel images (tests/conftest.py). The tests
whose subject is the script around the model (resuming, divergence, schedules, outputs) train
the graded UNet's structure at a sixteenth of its width (``SLIM``)."""
import json
import shutil

import numpy as np
import pytest
import torch
import torchvision
from conftest import assert_picture, interrupt_at_epoch, write_retina
from PIL import Image
from sklearn.metrics import f1_score, roc_auc_score
from torchvision import tv_tensors

import main_segmentation as seg
from medimg import retina as retina_data
from medimg.cli import UserError
from medimg.execution import Execution
from medimg.figures import load_mask_png
from medimg.options import parse_segmentation_args
from medimg.runfiles import check_resumable
from medimg.segmentation_metrics import (
    constant_prediction_dice,
    pixel_metrics,
    thresholded_dice,
)
from medimg.segmentation_models import build_smp_unet
from medimg.training import Progress, skips_non_finite_steps_on_device
from unet import UNet

FAST = ["--epochs", "1", "--batch_size", "2", "--crop_size", "32", "--threads", "2"]
# for the tests whose subject is the script around the model (resuming, divergence, schedules,
# outputs): the graded UNet's modules at a sixteenth of its width (4 to 64 channels, 120
# thousand weights instead of 31 million); the graded width has tests of its own
SLIM = ["--base_channels", "4"]


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
    # the thresholded Dice of each test image, by name, whose mean is the reported Dice
    per_image = results["final_metrics"]["per_image_dice"]
    assert list(per_image) == ["01_test", "02_test"]
    assert np.mean(list(per_image.values())) == pytest.approx(results["final_metrics"]["dice"])
    # the code that trained it: the graded files and the script among the files hashed
    assert {"main_segmentation.py", "unet.py", "utils.py", "medimg/retina.py"} <= set(results["code_fingerprint"]["files"])


@pytest.mark.parametrize("skip_connections", [True, False])
def test_base_channels_narrow_every_level_and_keep_the_graded_structure(skip_connections):
    """UNet(..., base_channels=4), the plumbing tests' model, has every module of the graded
    UNet, in order, each convolution at a sixteenth of its channels (the image's 3 and the
    output's 1 kept), the same attributes and forward, and so the same shapes; the default
    is the graded width."""
    with torch.device("meta"):
        graded, slim = UNet(3, 1, skip_connections), UNet(3, 1, skip_connections, base_channels=4)
        x = torch.empty(2, 3, 64, 64)
        assert slim(x).shape == graded(x).shape == (2, 1, 64, 64)
    modules = lambda net: [(n, type(m)) for n, m in net.named_modules() if n]
    assert modules(slim) == modules(graded)
    narrowed = lambda c: c if c in (1, 3) else c // 16
    for (name, a), (_, b) in zip(slim.named_modules(), graded.named_modules()):
        if isinstance(b, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            assert (a.in_channels, a.out_channels) == (narrowed(b.in_channels), narrowed(b.out_channels)), name
    assert graded.encoder_block5[0].out_channels == 1024 and graded.outconv.in_channels == 64
    public = lambda net: {k: v for k, v in vars(net).items() if not k.startswith("_")}
    assert public(slim) == public(graded)
    assert parse_segmentation_args(["--dataset", "d", "--logdir", "l"]).base_channels == 64


def test_base_channels_are_refused_for_the_smp_unet(capsys):
    _expect_one_line_error(capsys, ["--dataset", "d", "--logdir", "l", "--model", "smp_unet", "--base_channels", "8"],
                           "--base_channels 8", "smp_unet")


@pytest.mark.parametrize("model", ["unet", "unet_noskip"])
def test_one_epoch_of_each_unet_variant(retina, tmp_path, model):
    # the execution fixed: timing the candidates on 31M weights is half this test's time, and the
    # choice has tests of its own (test_bench, the doubted choice below)
    results = run(retina, tmp_path / model, "--model", model, "--save_model", "--amp", "off", "--channels_last", "off")
    check_results(results)
    assert results["config"]["model"] == model
    assert len(results["train_whole_soft_dice"]) == len(results["valid_accs"]) == 1  # --train_eval every, the default
    expected = UNet(3, 1, skip_connections=model == "unet")
    assert results["n_parameters"] == sum(p.numel() for p in expected.parameters())
    # the saved weights are the graded network's, every tensor
    expected.load_state_dict(torch.load(tmp_path / model / "model.pt", weights_only=False)["model"], strict=True)
    # without skips the decoder's blocks see only the upsampled path: fewer input channels
    assert (sum(p.numel() for p in UNet(3, 1, skip_connections=False).parameters())
            < sum(p.numel() for p in UNet(3, 1).parameters()))
    assert_picture(tmp_path / model / "curves.png")
    assert_picture(tmp_path / model / "predictions.png")
    assert not (tmp_path / model / "checkpoint.pt").exists()
    # the first test image's truth and thresholded prediction, at its size, for the report's panels
    truth = load_mask_png(tmp_path / model / "example_01_test_truth.png")
    prediction = load_mask_png(tmp_path / model / "example_01_test_prediction.png")
    with Image.open(retina / "test" / "mask" / "01_test.png") as mask:
        np.testing.assert_array_equal(truth, np.asarray(mask) > 127)
    assert prediction.shape == truth.shape and prediction.dtype == bool


def test_one_epoch_of_the_smp_unet_from_scratch(retina, tmp_path):
    # the execution fixed: choosing it (four candidates timed on a 14M-weight network) is not this test's subject
    results = run(retina, tmp_path / "smp", "--model", "smp_unet", "--encoder_weights", "none",
                  "--amp", "off", "--channels_last", "off")
    check_results(results)
    assert results["n_parameters"] > 14e6  # resnet18 encoder + UNet decoder


def test_smp_unet_loads_a_torchvision_resnet18_state_dict(retina, tmp_path):
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
    check_results(run(retina, tmp_path / augmentation, *SLIM, "--augmentation", augmentation))


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
        if augmentation in ("color", "camera"):  # values change, nothing geometric happens
            torch.testing.assert_close(y[0], torch.from_numpy(mask).float())
        elif augmentation == "combined":  # moved and recoloured: the mask still marks the image's vessels
            assert x[2][y[0].bool()].mean() - x[2][~y[0].bool()].mean() > 0.4
        else:
            from_image = x[2] > 0.5
            disagreement = (from_image != y[0].bool()).float().mean().item()
            assert disagreement < 0.02, disagreement


def test_random_crops_stay_aligned():
    # random noise is aperiodic: only the true offset of a crop matches the source anywhere
    generator = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, 64, 64), generator=generator, dtype=torch.uint8)
    mask = (torch.rand(1, 64, 64, generator=generator) > 0.5).to(torch.uint8)
    dataset = retina_data.RetinaTrainSet(image[None], mask[None], "none", crop_size=16, crops_per_image=3)
    assert len(dataset) == 3
    torch.manual_seed(1)
    for i in range(20):
        x, y = dataset[i % 3]
        pixels = (x * 255).round().to(torch.uint8)
        found = [(t, l) for t in range(49) for l in range(49) if torch.equal(image[:, t:t + 16, l:l + 16], pixels)]
        assert len(found) == 1, found
        (t, l), = found
        assert torch.equal(mask[:, t:t + 16, l:l + 16].float(), y)


def _displacement(strategy, size, draws=6):
    """Mean displacement in pixels that a strategy applies to the interior of a
    ``size``-pixel image, measured by transforming an image of its own coordinates."""
    transform = retina_data.build_augmentation(strategy)
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    coordinates = tv_tensors.Image(torch.stack([xx, yy, torch.zeros_like(xx)]))
    inner = slice(size // 4, -size // 4)
    torch.manual_seed(0)
    moved = []
    for _ in range(draws):
        out = transform(coordinates)
        moved.append(torch.hypot(out[0, inner, inner] - xx[inner, inner], out[1, inner, inner] - yy[inner, inner]).mean())
    return float(torch.stack(moved).mean())


@pytest.mark.parametrize("strategy,minimum", [("affine", 0.02), ("elastic", 0.01)])
@pytest.mark.parametrize("size", [96, 512])
def test_geometric_strategies_move_pixels_in_proportion_to_the_image(strategy, minimum, size):
    # the affine's 30 degrees, 5% shifts and 15% zooms move the interior by several % of the side;
    # elastic bends it by about 1.9% (1.5% per axis), at any size
    assert _displacement(strategy, size) > minimum * size


def test_geometric_strategies_resample_the_image_smoothly_and_the_mask_exactly():
    """The image bilinearly (new grey levels between the old ones appear), the mask by nearest
    neighbour (it stays binary and follows the image)."""
    image = torch.zeros(3, 64, 64, dtype=torch.uint8)
    image[:, :, 32:] = 255
    mask = (image[:1] > 0).to(torch.uint8)
    for strategy in ("affine", "elastic"):
        torch.manual_seed(0)
        out, out_mask = retina_data.build_augmentation(strategy)(tv_tensors.Image(image), tv_tensors.Mask(mask))
        values = out[0].unique()
        assert ((values > 0.05) & (values < 0.95)).sum() > 5, strategy  # interpolated edge
        assert set(out_mask.unique().tolist()) <= {0, 1}
        inside = out_mask[0].bool()
        assert out[0][inside].mean() > 0.8 and out[0][~inside].mean() < 0.2, strategy


@pytest.mark.parametrize("strategy", ["color", "camera"])
def test_photometric_strategies_change_values_and_leave_geometry_and_mask_alone(strategy):
    generator = torch.Generator().manual_seed(0)
    image = torch.randint(40, 200, (3, 64, 64), generator=generator, dtype=torch.uint8)
    mask = (torch.rand(1, 64, 64, generator=generator) > 0.8).to(torch.uint8)
    transform = retina_data.build_augmentation(strategy)
    torch.manual_seed(0)
    changes = []
    for _ in range(6):
        out, out_mask = transform(tv_tensors.Image(image), tv_tensors.Mask(mask))
        assert torch.equal(out_mask.as_subclass(torch.Tensor), mask)
        assert out.dtype == torch.float32 and 0 <= out.min() and out.max() <= 1
        changes.append((out - image.float() / 255).abs().mean())
        # the geometry is kept: each channel stays correlated, pixel for pixel, with the original
        for c in range(3):
            assert torch.corrcoef(torch.stack([out[c].flatten(), image[c].flatten().float()]))[0, 1] > 0.5
    assert float(torch.stack(changes).mean()) > 0.03  # exposure, colour or illumination: several %


def test_none_strategy_is_the_identity():
    assert retina_data.build_augmentation("none") is None
    assert retina_data.describe("none") == "no augmentation"
    assert "displacement 0.015" in retina_data.describe("elastic") and "degrees 30" in retina_data.describe("affine")
    assert "interpolation bilinear" in retina_data.describe("affine")


def test_a_few_dozen_steps_learn_the_generated_vessels(retina):
    """train() and training_step() really optimise: 48 steps of a small network raise the
    thresholded Dice far above what predicting every pixel as vessel scores."""
    torch.manual_seed(0)
    train_split, test_split = retina_data.Split.load(retina / "train"), retina_data.Split.load(retina / "test")
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(32, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(32, 1, 1))
    execution, loss_fn = Execution.plain("cpu"), seg.DiceCELoss()
    loader = torch.utils.data.DataLoader(retina_data.RetinaTrainSet(train_split.images, train_split.masks,
                                                                     crop_size=32, crops_per_image=8),
                                         batch_size=8, shuffle=True)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    before, _ = seg.evaluate(net, test_split, loss_fn, execution)
    losses = [seg.train(epoch, net, loader, optimizer, execution.grad_scaler(), loss_fn, execution, 1000)[0]
              for epoch in range(8)]
    after, _ = seg.evaluate(net, test_split, loss_fn, execution)
    all_vessel = constant_prediction_dice(test_split.masks, test_split.sizes, vessel=True)
    assert losses[-1] < 0.7 * losses[0] and after["loss"] < 0.7 * before["loss"]
    assert after["thresholded_dice"] > max(0.5, 3 * all_vessel), (after, all_vessel)


def test_metrics_ignore_the_padding():
    # a 50x50 image padded to 64x64; a model that says "vessel" everywhere
    mask = torch.zeros(1, 1, 64, 64, dtype=torch.uint8)
    mask[0, 0, 10:20, 10:40] = 1
    split = retina_data.Split(["padded"], torch.zeros(1, 3, 64, 64, dtype=torch.uint8), mask, [(50, 50)])

    class AllVessel(torch.nn.Module):
        def forward(self, x):
            return torch.full_like(x[:, :1], 50.0)

    metrics, _ = seg.evaluate(AllVessel(), split, seg.DiceCELoss(), Execution.plain("cpu"))
    vessels = 10 * 30
    assert metrics["thresholded_dice"] == pytest.approx(2 * vessels / (50 * 50 + vessels))  # not / (64 * 64 + ...)
    assert constant_prediction_dice(mask, [(50, 50)], vessel=True) == pytest.approx(2 * vessels / (2500 + vessels))


def test_validation_split_keeps_copies_of_one_eye_together():
    names = [f"{21 + f}_training_{k}" for f in range(10) for k in range(4)]
    train, val = retina_data.split_by_fundus(names, 0.2, seed=1)
    assert len(val) == 8 and len(train) == 32
    assert {retina_data.fundus_id(names[i]) for i in train}.isdisjoint({retina_data.fundus_id(names[i]) for i in val})


def test_final_metrics_come_from_the_best_validation_state(retina, tmp_path, monkeypatch):
    real_evaluate, states, scores = seg.evaluate, [], iter([0.2, 0.9, 0.5])  # the best is epoch 2 of 3

    def spy(model, split, loss_fn, execution):
        metrics, logits = real_evaluate(model, split, loss_fn, execution)
        score = next(scores, None) if split.names == validation_names else None
        if score is not None:  # the three evaluations of the epochs, not the final per-image one
            states.append({k: v.clone() for k, v in model.state_dict().items()})
            metrics["thresholded_dice"] = score
        return metrics, logits

    names = retina_data.load_split(retina / "train")[0]
    held_out = [names[i] for i in retina_data.split_by_fundus(names, 0.34, seed=42)[1]]
    validation_names = [held_out[i] for i in retina_data.one_copy_per_eye(held_out)]
    monkeypatch.setattr(seg, "evaluate", spy)
    results = run(retina, tmp_path / "val", *SLIM, "--val_fraction", "0.34", "--epochs", "3", "--save_model")
    assert results["evaluated_on"] == "validation" and results["final_metrics_model"] == "best validation epoch"
    assert results["n_train_images"] == 4 and results["best_epoch"] == 2
    assert results["valid_dice_thresholded"] == [0.2, 0.9, 0.5]
    final = torch.load(tmp_path / "val" / "model.pt", weights_only=False)["model"]
    for key, value in states[1].items():
        torch.testing.assert_close(final[key], value)
    assert not all(torch.equal(states[1][k], states[2][k]) for k in states[1])  # epoch 3 did change the weights


def test_schedule_evaluation_size_precision_and_saved_weights(retina, tmp_path):
    results = run(retina, tmp_path / "opts", *SLIM, "--epochs", "3", "--eval_every", "2", "--lr_schedule", "cosine",
                  "--lr", "1e-3", "--image_size", "32", "--crop_size", "16", "--plain", "--save_model")
    np.testing.assert_allclose(results["learning_rates"], [1e-3 * (1 + np.cos(np.pi * e / 3)) / 2 for e in range(3)])
    assert results["evaluated_epochs"] == [2, 3] and len(results["valid_losses"]) == 2
    assert results["execution"] == {"device": "cpu", "autocast": None, "channels_last": False,
                                    "selection": {"chosen": "plain", "how": "--plain"}}
    # metrics were computed at 32x32: the all-vessel score of the test masks resized to 32
    masks = retina_data.load_split(retina / "test")[2]
    small = retina_data.load_split(retina / "test", image_size=32)
    assert small[1].shape[-1] == 32
    assert results["baselines"]["all_vessel_dice"] == pytest.approx(
        constant_prediction_dice(small[2], small[3], vessel=True))
    assert results["baselines"]["all_vessel_dice"] != pytest.approx(
        constant_prediction_dice(masks, [(64, 64)] * len(masks), vessel=True))
    # the saved weights are the trained UNet's, every tensor (the graded width's are
    # test_one_epoch_of_each_unet_variant's)
    saved = torch.load(tmp_path / "opts" / "model.pt", weights_only=False)["model"]
    UNet(3, 1, base_channels=4).load_state_dict(saved, strict=True)


def test_train_eval_never_skips_only_the_training_eyes(retina, tmp_path):
    small = ["--epochs", "2", "--image_size", "32", "--crop_size", "16", "--plain"]
    every = run(retina, tmp_path / "every", *SLIM, *small)
    never = run(retina, tmp_path / "never", *SLIM, *small, "--train_eval", "never")
    whole = ("train_whole_losses", "train_whole_soft_dice", "train_whole_dice_thresholded")
    assert all(len(every[key]) == 2 for key in whole) and all(never[key] == [] for key in whole)
    assert list(never) == list(every) and never["measures"] == every["measures"]  # the same keys, meaning the same
    # evaluating the training eyes draws no random number: everything else is the same, bit for bit
    for key in ("train_losses", "valid_losses", "valid_accs", "valid_dice_thresholded", "final_metrics"):
        assert never[key] == every[key], key
    assert_picture(tmp_path / "never" / "curves.png")


def test_progress_keeps_a_copy_of_the_best_weights_and_survives_a_checkpoint(tmp_path):
    net = torch.nn.Linear(2, 1)
    optimizer = torch.optim.AdamW(net.parameters())
    parts = {"model": net, "optimizer": optimizer, "scheduler": None}
    progress = Progress(code="c" * 64)
    assert progress.update_best(1, 0.5, net) and not progress.update_best(2, 0.5, net)
    with torch.no_grad():
        net.weight.add_(1.0)  # training goes on: the kept weights must not follow
    assert not torch.equal(progress.best_state["weight"], net.weight)
    progress.history.append(train_losses=0.25, train_times=3.0)
    progress.epochs_done = 2
    progress.save(tmp_path / "checkpoint.pt", parts, torch.Generator().manual_seed(0))
    check_resumable(tmp_path, {"sha256": "c" * 64})  # the code that wrote it
    with pytest.raises(UserError, match="trained by other code"):
        check_resumable(tmp_path, {"sha256": "d" * 64})
    loaded = Progress.load(tmp_path / "checkpoint.pt", parts, torch.Generator(), "c" * 64)
    assert loaded.code == "c" * 64
    assert (loaded.epochs_done, loaded.resumed_at_epoch, loaded.best_epoch, loaded.best_score) == (2, 2, 1, 0.5)
    assert loaded.history == {"train_losses": [0.25], "train_times": [3.0]} and loaded.earlier_seconds == 3.0
    assert torch.equal(loaded.best_state["weight"], progress.best_state["weight"])


def test_an_unreadable_checkpoint_is_refused_in_one_line(tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"cut short by a full disk")
    with pytest.raises(UserError, match="cannot load the checkpoint.*delete it to start the run afresh"):
        check_resumable(tmp_path, {"sha256": "c" * 64})


def test_the_device_skips_a_non_finite_step_only_with_a_fused_optimizer_and_an_enabled_scaler():
    parameters = [torch.nn.Parameter(torch.zeros(2))]
    enabled = torch.amp.GradScaler("cpu", init_scale=1.0)
    disabled = torch.amp.GradScaler("cpu", enabled=False)
    fused, unfused = torch.optim.AdamW(parameters, fused=True), torch.optim.AdamW(parameters)
    assert skips_non_finite_steps_on_device(fused, enabled)
    assert not skips_non_finite_steps_on_device(unfused, enabled)
    assert not skips_non_finite_steps_on_device(fused, disabled)


def test_bf16_autocast_training_runs_and_is_recorded(retina, tmp_path):
    # the slim UNet on 32-px images, nothing measured, no training-eye evaluation: a second where
    # bf16 is emulated (the fast paths' arithmetic on full networks is tests/test_bench.py's)
    results = run(retina, tmp_path / "bf16", *SLIM, "--amp", "bf16", "--channels_last", "off", "--image_size", "32",
                  "--crop_size", "0", "--train_eval", "never")
    check_results(results)
    assert results["execution"]["autocast"] == "bfloat16"


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
    results = run(root, tmp_path / "run", *SLIM)
    vessels = masks[0, 0, :50, :50].sum().item()
    assert results["baselines"]["all_vessel_dice"] == pytest.approx(2 * vessels / (2500 + vessels))


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
    run(retina, tmp_path / "run", *SLIM)
    before = (tmp_path / "run" / "results.json").read_bytes()
    _expect_one_line_error(capsys, ["--dataset", str(retina), "--logdir", str(tmp_path / "run"), *FAST, *SLIM],
                           "already holds a run", "--resume")
    assert (tmp_path / "run" / "results.json").read_bytes() == before
    seg.main(["--dataset", str(retina), "--logdir", str(tmp_path / "run"), *FAST, *SLIM, "--resume"])  # complete: no-op
    assert (tmp_path / "run" / "results.json").read_bytes() == before


def test_divergence_stops_cleanly_and_records_the_history(retina, tmp_path, monkeypatch):
    real_train = seg.train

    def exploding_from_epoch_2(epoch, model, loader, optimizer, scaler, loss_fn, *rest):
        if epoch >= 2:  # the loss of every step of the third epoch is NaN
            loss_fn = lambda logits, targets, real=loss_fn: real(logits, targets) * float("nan")
        return real_train(epoch, model, loader, optimizer, scaler, loss_fn, *rest)

    monkeypatch.setattr(seg, "train", exploding_from_epoch_2)
    results = run(retina, tmp_path / "nan", *SLIM, "--epochs", "5", "--crops_per_image", "2", "--save_model")
    assert results["diverged"] is True
    assert results["epochs_completed"] == 2 and len(results["train_losses"]) == 2
    # the NaN steps were skipped: the final weights and metrics are the last finite ones
    # (the evaluation clamps non-finite logits, so the metrics alone would not show NaN weights)
    final = torch.load(tmp_path / "nan" / "model.pt", weights_only=False)["model"]
    assert all(torch.isfinite(value).all() for value in final.values())
    assert np.isfinite(results["final_metrics"]["loss"]) and results["final_metrics"]["auc"] is not None
    assert not (tmp_path / "nan" / "checkpoint.pt").exists()


def test_resume_after_an_interruption_continues_where_it_stopped(retina, tmp_path, monkeypatch):
    # one execution for both runs: a measured choice may differ between two runs, and bit for bit
    # is a promise about one execution (that a resumed run keeps its own is the next test)
    argv = ["--dataset", str(retina), *FAST, *SLIM, "--epochs", "2", "--amp", "off", "--channels_last", "off",
            "--train_eval", "never"]
    seg.main([*argv, "--logdir", str(tmp_path / "straight")])
    straight = json.loads((tmp_path / "straight" / "results.json").read_text())

    restore = interrupt_at_epoch(monkeypatch, seg, 1)
    with pytest.raises(KeyboardInterrupt):
        seg.main([*argv, "--logdir", str(tmp_path / "resumed")])
    assert (tmp_path / "resumed" / "checkpoint.pt").exists() and not (tmp_path / "resumed" / "results.json").exists()
    restore()
    seg.main([*argv, "--logdir", str(tmp_path / "resumed"), "--resume"])
    resumed = json.loads((tmp_path / "resumed" / "results.json").read_text())
    assert resumed["resumed_at_epoch"] == 1
    # the seed's first-epoch draws were made before the interruption: said, not invented
    assert resumed["seed_trace"]["first_epoch"] == "not traced: resumed at epoch 1"
    assert resumed["seed_trace"]["initial_weights_sha256"] == straight["seed_trace"]["initial_weights_sha256"]
    # the same execution (remembered), the same random streams: the same numbers, bit for bit
    assert resumed["execution"]["autocast"] == straight["execution"]["autocast"]
    assert resumed["train_losses"] == straight["train_losses"]
    assert resumed["final_metrics"]["soft_dice"] == straight["final_metrics"]["soft_dice"]


def test_a_resumed_run_keeps_the_execution_it_chose(retina, tmp_path, monkeypatch):
    """A resumed run computes with the execution its interrupted part chose (kept beside the
    checkpoint), even when the machine's remembered choice was forgotten or changed since."""
    logdir = tmp_path / "kept"
    argv = ["--dataset", str(retina), *FAST, *SLIM, "--epochs", "2", "--logdir", str(logdir)]
    restore = interrupt_at_epoch(monkeypatch, seg, 1)
    with pytest.raises(KeyboardInterrupt):
        seg.main(argv)
    restore()
    kept = json.loads((logdir / "execution.json").read_text())

    def no_new_choice(*args, **kwargs):
        raise AssertionError("a resumed run chose its execution again")
    monkeypatch.setattr(seg.workloads, "for_segmentation", no_new_choice)
    seg.main([*argv, "--resume"])
    results = json.loads((logdir / "results.json").read_text())
    assert {k: results["execution"][k] for k in ("autocast", "channels_last")} == \
        {k: kept[k] for k in ("autocast", "channels_last")}
    assert results["execution"]["selection"]["how"].startswith("kept from the interrupted run")
    assert not (logdir / "execution.json").exists() and not (logdir / "checkpoint.pt").exists()


def test_a_run_is_resumed_only_by_the_code_that_trained_its_epochs(retina, tmp_path, monkeypatch, capsys):
    """results.json records one code fingerprint: a checkpoint written by other code (an edit
    since the interruption) is refused in one line, and the run's folder is left as it was."""
    logdir = tmp_path / "edited"
    argv = ["--dataset", str(retina), *FAST, *SLIM, "--epochs", "2", "--plain", "--logdir", str(logdir)]
    restore = interrupt_at_epoch(monkeypatch, seg, 1)
    with pytest.raises(KeyboardInterrupt):
        seg.main(argv)
    restore()
    before = {p.name: p.read_bytes() for p in logdir.iterdir()}
    real = seg.code_fingerprint
    monkeypatch.setattr(seg, "code_fingerprint", lambda script: {**real(script), "sha256": "e" * 64})  # an edit
    _expect_one_line_error(capsys, [*argv, "--resume"], "trained by other code", "eeeeeeeeeeee")
    assert {p.name: p.read_bytes() for p in logdir.iterdir()} == before  # nothing touched
    monkeypatch.setattr(seg, "code_fingerprint", real)
    seg.main([*argv, "--resume"])  # the code that made it resumes it
    assert json.loads((logdir / "results.json").read_text())["resumed_at_epoch"] == 1


def test_augmentations_figure(retina, tmp_path):
    run(retina, tmp_path / "fig", *SLIM, "--show_augmentations", "2")
    width, height = assert_picture(tmp_path / "fig" / "augmentations.png")
    # one row per strategy, the original and two draws per row
    assert height / width == pytest.approx((2.45 * len(retina_data.STRATEGIES)) / (2.3 * 3), rel=0.15)


def test_binary_dice_and_pixel_metrics_against_sklearn():
    rng = np.random.default_rng(0)
    truth = rng.random((40, 40)) > 0.8
    probs = np.clip(truth * 0.6 + rng.random((40, 40)) * 0.5, 0, 1)
    assert thresholded_dice(torch.from_numpy(probs > 0.5), torch.from_numpy(truth)) == \
        pytest.approx(f1_score(truth.ravel(), probs.ravel() > 0.5))
    metrics = pixel_metrics([probs], [truth])
    assert metrics["auc"] == pytest.approx(roc_auc_score(truth.ravel(), probs.ravel()))
    pred = probs > 0.5
    assert metrics["sensitivity"] == pytest.approx((pred & truth).sum() / truth.sum())
    assert metrics["specificity"] == pytest.approx((~pred & ~truth).sum() / (~truth).sum())
    # a logit of exactly 0 (probability 0.5) is background for every measure, as for the thresholded Dice
    edge = pixel_metrics([np.array([[0.5, 0.9]])], [np.array([[True, True]])])
    assert edge["sensitivity"] == 0.5


# numeric flag -> the smallest value it accepts (0 where zero means "off" or is legitimate)
NUMERIC_FLAGS = {"--batch_size": 1, "--epochs": 1, "--lr": None, "--weight_decay": 0, "--print_every": 1,
                 "--seed": 0, "--show_augmentations": 0, "--crop_size": 0, "--crops_per_image": 1,
                 "--image_size": 0, "--val_fraction": 0, "--train_fraction": None, "--eval_every": 1,
                 "--threads": 0}


@pytest.mark.parametrize("flag,value", [(flag, value) for flag, smallest in sorted(NUMERIC_FLAGS.items())
                                        for value in ("0", "-1", "nan", "inf") if not (value == "0" and smallest == 0)])
def test_bad_numeric_flags_give_one_line_and_create_nothing(retina, tmp_path, capsys, flag, value):
    logdir = tmp_path / "run"
    _expect_one_line_error(capsys, ["--dataset", str(retina), "--logdir", str(logdir), flag, value], flag, value)
    assert not logdir.exists()


def test_option_names_are_never_abbreviated(retina, tmp_path, capsys):
    _expect_one_line_error(capsys, ["--dataset", str(retina), "--logdir", str(tmp_path / "r"), "--encoder", "x"],
                           "--encoder")
    _expect_one_line_error(capsys, ["--dataset", str(retina), "--logdir", str(tmp_path / "r"), "--crop", "32"],
                           "--crop")
    assert not (tmp_path / "r").exists()


def test_the_run_doubts_its_execution_choice_by_its_own_second_epoch(retina, tmp_path, monkeypatch):
    """After the second epoch (the first includes warm-up) the run hands its own seconds per
    step to ``execution.recheck``, which forgets a remembered choice it contradicts."""
    calls = []
    monkeypatch.setattr(seg, "recheck", lambda selection, seconds, tolerance: calls.append((selection, seconds)))
    run(retina, tmp_path / "two", *SLIM, "--epochs", "2")
    assert len(calls) == 1 and calls[0][1] > 0 and "chosen" in calls[0][0]


def test_a_seed_reaches_the_weights_the_batch_order_and_the_augmentation(retina, tmp_path):
    """Three seeds are three samples only if the seed decides everything random in a run. Made
    through the script's entry point (whole images, elastic augmentation): two
    seeds start from other weights, draw the samples in another order and augment the same
    image differently; the same seed twice makes the same run, bit for bit."""
    def made(name, seed, augmentation="elastic"):
        return run(retina, tmp_path / name, *SLIM, "--crop_size", "0", "--augmentation", augmentation,
                   "--seed", str(seed), "--plain")
    a, b, again = made("a", 42), made("b", 43), made("again", 42)
    trace = lambda r: r["seed_trace"]
    assert trace(a)["initial_weights_sha256"] != trace(b)["initial_weights_sha256"]
    assert trace(a)["first_epoch_order"] != trace(b)["first_epoch_order"]
    assert sorted(trace(a)["first_epoch_order"]) == sorted(trace(b)["first_epoch_order"])  # the same images
    sample = lambda r, i: trace(r)["first_epoch_samples_sha256"][trace(r)["first_epoch_order"].index(i)]
    assert all(sample(a, i) != sample(b, i) for i in trace(a)["first_epoch_order"])  # each drawn anew
    assert trace(a) == trace(again)
    assert a["train_losses"] == again["train_losses"] and a["final_metrics"] == again["final_metrics"]
    # without augmentation a sample is the image itself, whatever the seed: the draws above were the augmentation's
    plain_a, plain_b = made("plain_a", 42, "none"), made("plain_b", 43, "none")
    assert all(sample(plain_a, i) == sample(plain_b, i) for i in trace(plain_a)["first_epoch_order"])


def test_a_run_records_each_eye_and_test_image_and_keeps_its_predictions(retina, tmp_path):
    """--val_fraction with --final_weights last: the test images, the training eyes and the
    held-out eyes each measured per image with the last epoch's weights; every test image's
    thresholded prediction is a page of test_predictions.tif."""
    from medimg.figures import load_mask_pages
    results = run(retina, tmp_path / "run", *SLIM, "--val_fraction", "0.34", "--final_weights", "last",
                  "--epochs", "2", "--plain")
    final = results["final_metrics"]
    assert results["final_metrics_model"] == "last epoch" and results["evaluated_on"] == "validation"
    held_out, trained = set(final["per_image_dice_validation"]), set(final["per_image_dice_train_eyes"])
    eye = lambda names: {name.rsplit("_", 1)[0] for name in names}
    # one eye of three held out, and one copy of each eye on both sides, as the curves measure them
    assert len(held_out) == len(eye(held_out)) == 1 and len(trained) == len(eye(trained)) == 2
    assert not eye(held_out) & eye(trained)
    # the last evaluation was of the same weights: its held-out mean is the per-image mean
    assert np.mean(list(final["per_image_dice_validation"].values())) == \
        pytest.approx(results["valid_dice_thresholded"][-1])
    pages = load_mask_pages(tmp_path / "run" / "test_predictions.tif")
    assert len(pages) == len(final["per_image_dice"]) == 2 and pages[0].shape == (64, 64)
    truth = [load_mask_png(tmp_path / "run" / "example_01_test_truth.png")]
    assert np.array_equal(pages[0], load_mask_png(tmp_path / "run" / "example_01_test_prediction.png"))
    assert thresholded_dice(torch.from_numpy(pages[0]), torch.from_numpy(truth[0])) == \
        pytest.approx(final["per_image_dice"]["01_test"])
