"""Tests of the four graded modules (mlp.py, utils.py, mobileNet.py, unet.py) against
independent references: torch.nn.Linear, scipy.signal, MONAI's DiceLoss, and layer
layouts written out here from the assignment's tables.

Run with ``pytest test.py`` (or ``python test.py``)."""
import math

import numpy as np
import pytest
import scipy.signal
import torch
import torch.nn as nn

from mlp import MLP, Linear
from mobileNet import DepthwiseSeparableBlock, DepthwiseSeparableConv, MobileNet
from unet import DecoderBlock, UNet, double_conv_block
from utils import BinaryCELoss, DiceCELoss, DiceLoss, discrete_2d_convolution, discrete_2d_convolution_loop


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ----------------------------------------------------------------------------- Problem 1

def test_linear_matches_torch_linear_for_any_leading_shape():
    ours, ref = Linear(20, 30), nn.Linear(20, 30)
    with torch.no_grad():
        ours.weight.copy_(ref.weight)
        ours.bias.copy_(ref.bias)
    for shape in [(20,), (7, 20), (2, 3, 20)]:
        x = torch.randn(shape)
        torch.testing.assert_close(ours(x), ref(x))
    assert ours.in_features == 20 and ours.out_features == 30
    assert ours.weight.shape == (30, 20) and ours.bias.shape == (30,)
    assert ours.weight.requires_grad and ours.bias.requires_grad
    assert {name for name, _ in ours.named_parameters()} == {"weight", "bias"}


def test_linear_is_written_from_tensor_operations(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("Linear must not call F.linear")
    monkeypatch.setattr(torch.nn.functional, "linear", forbidden)
    Linear(4, 3)(torch.randn(2, 4))
    assert not any(isinstance(m, nn.Linear) for m in Linear(4, 3).modules())


def test_a_fresh_linear_holds_finite_numbers_and_draws_no_random_numbers():
    state = torch.random.get_rng_state()
    layers = [Linear(37, 41) for _ in range(50)]  # torch.empty would leave whatever memory held
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all((p == 0).all() for layer in layers for p in layer.parameters())  # as documented: finite, the same each time


def test_mlp_layers_and_attributes():
    model = MLP(12, [8, 6, 5], 3, activation="tanh")
    assert (model.input_size, model.hidden_sizes, model.num_classes, model.activation) == (12, [8, 6, 5], 3, "tanh")
    assert isinstance(model.hidden_layers, nn.ModuleList)
    layers = model.hidden_layers + [model.output_layer]
    assert [(l.in_features, l.out_features) for l in layers] == [(12, 8), (8, 6), (6, 5), (5, 3)]
    assert all(type(l) is Linear for l in layers)
    hidden, output = model._build_layers(12, [8, 6, 5], 3)
    assert isinstance(hidden, nn.ModuleList) and len(hidden) == 3 and output.out_features == 3


def test_mlp_with_one_hidden_layer_is_allowed():
    model = MLP(4, [7], 2)
    assert len(model.hidden_layers) == 1
    assert model(torch.randn(3, 4)).shape == (3, 2)


@pytest.mark.parametrize("kwargs", [dict(activation="gelu"), dict(activation="softmax"), dict(hidden_sizes=[])])
def test_mlp_refuses_bad_configuration_with_assertion(kwargs):
    args = dict(input_size=4, hidden_sizes=[5], num_classes=2, activation="relu") | kwargs
    with pytest.raises(AssertionError, match=r"\w"):
        MLP(**args)


def test_glorot_normal_initialisation_on_a_large_layer():
    model = MLP(2000, [1000], 10)
    weight = model.hidden_layers[0].weight.detach()
    expected_std = math.sqrt(2 / (2000 + 1000))
    assert abs(weight.mean().item()) < 0.01 * expected_std * 10
    assert weight.std().item() == pytest.approx(expected_std, rel=0.01)
    # normal, not uniform: the excess kurtosis of a normal is 0, of a uniform -1.2
    kurtosis = ((weight - weight.mean()) ** 4).mean() / weight.var() ** 2 - 3
    assert abs(kurtosis.item()) < 0.05
    for layer in model.hidden_layers + [model.output_layer]:
        assert torch.count_nonzero(layer.bias) == 0


def test_initialize_linear_layer_is_called_for_every_layer(monkeypatch):
    seen = []
    monkeypatch.setattr(MLP, "_initialize_linear_layer", lambda self, module: seen.append(module))
    model = MLP(6, [5, 4], 3)
    assert {id(m) for m in seen} == {id(m) for m in model.hidden_layers + [model.output_layer]}


@pytest.mark.parametrize("name,reference", [("relu", torch.relu), ("tanh", torch.tanh), ("sigmoid", torch.sigmoid)])
def test_activation_fn_uses_the_name_given_not_self_activation(name, reference):
    model = MLP(4, [3], 2, activation="relu")
    x = torch.randn(50) * 3
    torch.testing.assert_close(model.activation_fn(name, x), reference(x), rtol=0, atol=0)


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])
def test_mlp_forward_flattens_and_matches_a_reference_network(activation):
    model = MLP(3 * 4 * 4, [16, 8], 5, activation=activation)
    act = {"relu": nn.ReLU(), "tanh": nn.Tanh(), "sigmoid": nn.Sigmoid()}[activation]
    reference = nn.Sequential(nn.Flatten(), nn.Linear(48, 16), act, nn.Linear(16, 8), act, nn.Linear(8, 5))
    with torch.no_grad():
        for ours, ref in zip(model.hidden_layers + [model.output_layer], reference[1::2]):
            ref.weight.copy_(ours.weight)
            ref.bias.copy_(ours.bias)
    images = torch.randn(6, 3, 4, 4)
    torch.testing.assert_close(model(images), reference(images))
    torch.testing.assert_close(model(images.flatten(1)), reference(images))
    assert model(images).shape == (6, 5)


# ----------------------------------------------------------------------------- Problem 2.1

def _correlate_by_definition(image, kernel):
    kh, kw = kernel.shape
    padded = np.pad(np.asarray(image, dtype=np.float64), ((kh // 2,) * 2, (kw // 2,) * 2))
    return np.array([[np.sum(padded[i:i + kh, j:j + kw] * kernel) for j in range(image.shape[1])]
                     for i in range(image.shape[0])])


@pytest.mark.parametrize("kernel_shape", [(3, 3), (5, 5), (1, 1), (3, 5), (7, 1)])
def test_convolution_matches_scipy_correlate2d_for_odd_kernels(kernel_shape):
    rng = np.random.default_rng(0)
    image, kernel = rng.normal(size=(23, 31)), rng.normal(size=kernel_shape)
    out = discrete_2d_convolution(image, kernel)
    expected = scipy.signal.correlate2d(image, kernel, mode="same", boundary="fill")
    assert out.dtype == np.float64 and out.shape == image.shape
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
    # and convolve2d with the kernel flipped computes the same thing
    np.testing.assert_allclose(out, scipy.signal.convolve2d(image, kernel[::-1, ::-1], mode="same"), atol=1e-12)


@pytest.mark.parametrize("kernel_shape", [(2, 2), (4, 4), (2, 3), (4, 1), (3, 6)])
def test_convolution_matches_the_definition_for_even_and_non_square_kernels(kernel_shape):
    rng = np.random.default_rng(1)
    image, kernel = rng.normal(size=(11, 14)), rng.normal(size=kernel_shape)
    np.testing.assert_allclose(discrete_2d_convolution(image, kernel), _correlate_by_definition(image, kernel),
                               atol=1e-12)
    np.testing.assert_allclose(discrete_2d_convolution_loop(image, kernel),
                               _correlate_by_definition(image, kernel), atol=1e-12)


def test_convolution_does_not_flip_the_kernel():
    image = np.zeros((5, 5))
    image[2, 2] = 1.0
    kernel = np.arange(9.0).reshape(3, 3)
    # correlating an impulse gives the kernel rotated by 180 degrees
    np.testing.assert_array_equal(discrete_2d_convolution(image, kernel)[1:4, 1:4], kernel[::-1, ::-1])


def test_convolution_converts_uint8_images_to_float():
    image = np.full((6, 6), 200, dtype=np.uint8)
    out = discrete_2d_convolution(image, np.ones((3, 3)))
    assert out.dtype == np.float64
    assert out[3, 3] == 1800.0  # would wrap around in uint8
    np.testing.assert_allclose(out, scipy.signal.correlate2d(image.astype(float), np.ones((3, 3)), mode="same"))


def test_convolution_filters_each_channel_of_a_colour_image():
    rng = np.random.default_rng(2)
    image, kernel = rng.integers(0, 256, size=(9, 10, 3)).astype(np.uint8), rng.normal(size=(3, 3))
    out = discrete_2d_convolution(image, kernel)
    assert out.shape == (9, 10, 3)
    for c in range(3):
        np.testing.assert_allclose(out[..., c], scipy.signal.correlate2d(image[..., c], kernel, mode="same"))


def test_convolution_rejects_bad_shapes():
    with pytest.raises(ValueError, match="kernel"):
        discrete_2d_convolution(np.zeros((4, 4)), np.zeros(3))
    with pytest.raises(ValueError, match="image"):
        discrete_2d_convolution(np.zeros(4), np.zeros((3, 3)))


# ----------------------------------------------------------------------------- Problem 2.4-2.5

def test_depthwise_separable_block_layout_and_forward():
    assert DepthwiseSeparableBlock is DepthwiseSeparableConv
    block = DepthwiseSeparableConv(8, 16, stride_dw=2, stride_pw=1).eval()
    dw, pw = block.depthwise, block.pointwise
    assert (dw.in_channels, dw.out_channels, dw.kernel_size, dw.groups, dw.padding, dw.stride, dw.bias) == \
        (8, 8, (3, 3), 8, (1, 1), (2, 2), None)
    assert (pw.in_channels, pw.out_channels, pw.kernel_size, pw.padding, pw.stride, pw.bias) == \
        (8, 16, (1, 1), (0, 0), (1, 1), None)
    assert block.bn1.num_features == 8 and block.bn2.num_features == 16
    reference = nn.Sequential(dw, block.bn1, nn.ReLU(), pw, block.bn2, nn.ReLU())
    x = torch.randn(2, 8, 9, 9)
    torch.testing.assert_close(block(x), reference(x))
    assert block(x).shape == (2, 16, 5, 5)


def _reference_mobilenet_layout(num_classes):
    """Table 1 of the paper, written out independently of mobileNet.py, as (name, module)."""
    def dws(cin, cout, stride):
        return nn.ModuleDict(dict(
            depthwise=nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), bn1=nn.BatchNorm2d(cin),
            pointwise=nn.Conv2d(cin, cout, 1, 1, 0, bias=False), bn2=nn.BatchNorm2d(cout)))
    rows = [(32, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2), (256, 256, 1), (256, 512, 2)]
    layout = nn.ModuleDict()
    layout["conv0"] = nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
    for i, (cin, cout, s) in enumerate(rows):
        layout[f"dw_sep_conv{i}"] = dws(cin, cout, s)
    for i in range(1, 6):
        layout[f"dw_sep_conv6{i}"] = dws(512, 512, 1)
    layout["dw_sep_conv7"] = dws(512, 1024, 2)
    layout["dw_sep_conv8"] = dws(1024, 1024, 1)
    layout["fc"] = nn.Linear(1024, num_classes)
    return layout


def test_mobilenet_parameter_count_matches_the_paper():
    model = MobileNet(1000)
    n = sum(p.numel() for p in model.parameters())
    # Independent count from Table 1: conv weights, BN (2 per channel) and the FC layer.
    dw_rows = [(32, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 512)] + [(512, 512)] * 5 + \
              [(512, 1024), (1024, 1024)]
    expected = 3 * 3 * 3 * 32 + 2 * 32
    expected += sum(9 * cin + 2 * cin + cin * cout + 2 * cout for cin, cout in dw_rows)
    expected += 1024 * 1000 + 1000
    assert n == expected
    assert n == pytest.approx(4.2e6, rel=0.02)  # "1.0 MobileNet-224: 4.2 million parameters"


def test_mobilenet_loads_an_independently_written_state_dict_strictly():
    model = MobileNet(9)
    reference = _reference_mobilenet_layout(9)
    ours = model.state_dict()
    theirs = reference.state_dict()
    assert [(k, v.shape) for k, v in ours.items()] == [(k, v.shape) for k, v in theirs.items()]
    model.load_state_dict(theirs, strict=True)
    assert isinstance(model.avgpool, nn.AdaptiveAvgPool2d) and model.avgpool.output_size == 1
    assert isinstance(model.softmax, nn.Softmax) and model.softmax.dim == 1


@pytest.mark.parametrize("size,batch", [(224, 1), (28, 4)])
def test_mobilenet_returns_probabilities_for_224_and_28_pixel_inputs(size, batch):
    model = MobileNet(9).eval()
    x = torch.randn(batch, 3, size, size)
    with torch.no_grad():
        probs, logits = model(x), model.forward_logits(x)
    assert probs.shape == (batch, 9) and logits.shape == (batch, 9)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(batch))
    assert (probs >= 0).all()
    torch.testing.assert_close(probs, torch.softmax(logits, dim=1))


# Table 1, row by row: the output (channels, size) of every layer for a 224x224 input
TABLE_1_OUTPUTS = {"conv0": (32, 112), "dw_sep_conv0": (64, 112), "dw_sep_conv1": (128, 56),
                   "dw_sep_conv2": (128, 56), "dw_sep_conv3": (256, 28), "dw_sep_conv4": (256, 28),
                   "dw_sep_conv5": (512, 14), **{f"dw_sep_conv6{i}": (512, 14) for i in range(1, 6)},
                   "dw_sep_conv7": (1024, 7), "dw_sep_conv8": (1024, 7), "avgpool": (1024, 1)}


def test_mobilenet_every_layer_output_size_follows_table_1():
    model = MobileNet(10).eval()
    sizes = {}
    hooks = [getattr(model, name).register_forward_hook(
        lambda m, i, o, name=name: sizes.__setitem__(name, tuple(o.shape[1:])))
        for name in [*TABLE_1_OUTPUTS, "fc"]]
    with torch.no_grad():
        model(torch.randn(1, 3, 224, 224))
    for h in hooks:
        h.remove()
    assert sizes == {**{name: (c, s, s) for name, (c, s) in TABLE_1_OUTPUTS.items()}, "fc": (10,)}


def _reference_mobilenet_logits(layout, x):
    """MobileNet's forward pass written from Figure 3 and Table 1 with functional calls on
    the reference layout's modules, independently of mobileNet.py."""
    x = layout["conv0"](x)
    for name, block in layout.items():
        if name.startswith("dw_sep_conv"):
            x = torch.relu(block["bn1"](block["depthwise"](x)))
            x = torch.relu(block["bn2"](block["pointwise"](x)))
    return layout["fc"](x.mean(dim=(2, 3)))


@pytest.mark.parametrize("training", [False, True])
def test_mobilenet_computes_what_an_independent_network_with_its_weights_computes(training):
    model, reference = MobileNet(9), _reference_mobilenet_layout(9)
    with torch.no_grad():  # non-trivial BatchNorm statistics, so that eval mode uses them
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.1, 0.1)
    reference.load_state_dict(model.state_dict(), strict=True)
    model.train(training)
    reference.train(training)
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        expected = _reference_mobilenet_logits(reference, x)
        torch.testing.assert_close(model.forward_logits(x), expected, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(model(x), torch.softmax(expected, dim=1), rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------- Problem 3.1

def test_double_conv_block_is_exactly_the_template():
    block = double_conv_block(3, 8)
    assert [type(m) for m in block] == [nn.Conv2d, nn.ReLU, nn.Conv2d, nn.ReLU]
    assert (block[0].in_channels, block[0].out_channels, block[0].kernel_size, block[0].padding) == (3, 8, (3, 3), (1, 1))
    assert (block[2].in_channels, block[2].out_channels, block[2].padding) == (8, 8, (1, 1))
    assert block[0].bias is not None and block[1].inplace and block[3].inplace


def test_decoder_block_concatenates_upsampled_map_first():
    block = DecoderBlock(16, 8)
    assert (block.upconv.in_channels, block.upconv.out_channels, block.upconv.kernel_size, block.upconv.stride) == \
        (16, 8, (2, 2), (2, 2))
    assert block.conv[0].in_channels == 16
    x, skip = torch.randn(2, 16, 5, 5), torch.randn(2, 8, 10, 10)
    expected = block.conv(torch.cat([block.upconv(x), skip], dim=1))
    torch.testing.assert_close(block(x, skip), expected)


def _reference_unet_layout(in_channels, num_classes):
    def dc(cin, cout):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(), nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU())
    layout = nn.ModuleDict()
    for i, (cin, cout) in enumerate([(in_channels, 64), (64, 128), (128, 256), (256, 512), (512, 1024)], start=1):
        layout[f"encoder_block{i}"] = dc(cin, cout)
    for i, (cin, cout) in enumerate([(1024, 512), (512, 256), (256, 128), (128, 64)], start=1):
        layout[f"decoder_block{i}"] = nn.ModuleDict(dict(upconv=nn.ConvTranspose2d(cin, cout, 2, 2), conv=dc(2 * cout, cout)))
    layout["outconv"] = nn.Conv2d(64, num_classes, 1)
    return layout


def test_unet_loads_an_independently_written_state_dict_strictly():
    model = UNet(input_shape=3, num_classes=2)
    reference = _reference_unet_layout(3, 2)
    assert [(k, v.shape) for k, v in model.state_dict().items()] == \
        [(k, v.shape) for k, v in reference.state_dict().items()]
    model.load_state_dict(reference.state_dict(), strict=True)
    assert isinstance(model.pool, nn.MaxPool2d) and model.pool.kernel_size == 2
    def conv(cin, cout, k):
        return cin * cout * k * k + cout
    expected = sum(conv(cin, cout, 3) + conv(cout, cout, 3)
                   for cin, cout in [(3, 64), (64, 128), (128, 256), (256, 512), (512, 1024)])
    expected += sum(conv(cin, cout, 2) + conv(2 * cout, cout, 3) + conv(cout, cout, 3)
                    for cin, cout in [(1024, 512), (512, 256), (256, 128), (128, 64)])
    expected += conv(64, 2, 1)
    assert sum(p.numel() for p in model.parameters()) == expected == 31_031_810  # about 31.0M


@pytest.mark.parametrize("size", [160, 512])
def test_unet_output_shape(size):
    model = UNet(input_shape=3, num_classes=1).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, size, size)).shape == (1, 1, size, size)


def test_unet_refuses_sizes_that_are_not_multiples_of_16_clearly():
    with pytest.raises(ValueError, match="multiples of 16"):
        UNet(3, 1)(torch.randn(1, 3, 40, 40))


def test_unet_without_skip_connections_is_opt_in():
    assert UNet(3, 1).skip_connections is True
    noskip = UNet(3, 1, skip_connections=False).eval()
    assert noskip.decoder_block4.conv[0].in_channels == 64
    with torch.no_grad():
        out = noskip(torch.randn(1, 3, 32, 32))
    assert out.shape == (1, 1, 32, 32)


# ----------------------------------------------------------------------------- Problem 3.2

@pytest.fixture
def monai_losses():
    """MONAI, the reference for the Dice losses: only these comparisons skip without it."""
    return pytest.importorskip("monai.losses")


def _dice_loss_by_the_formula(logits, targets, smooth):
    """1 - (2 sum(p t) + s) / (sum(p) + sum(t) + s) per channel over batch and space, mean over channels."""
    p = torch.sigmoid(logits.double())
    t = targets.double()
    dims = [0, *range(2, p.dim())]
    dice = (2 * (p * t).sum(dims) + smooth) / (p.sum(dims) + t.sum(dims) + smooth)
    return (1 - dice).mean().float()


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("smooth", [1.0, 1e-5])
def test_dice_loss_matches_the_formula(channels, smooth):
    logits = torch.randn(4, channels, 16, 12) * 2
    targets = (torch.rand(4, channels, 16, 12) > 0.7).float()
    torch.testing.assert_close(DiceLoss()(logits, targets, smooth=smooth),
                               _dice_loss_by_the_formula(logits, targets, smooth), atol=1e-5, rtol=0)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("smooth", [1.0, 1e-5])
def test_dice_loss_matches_monai(monai_losses, channels, smooth):
    logits = torch.randn(4, channels, 16, 12) * 2
    targets = (torch.rand(4, channels, 16, 12) > 0.7).float()
    reference = monai_losses.DiceLoss(sigmoid=True, batch=True, smooth_nr=smooth, smooth_dr=smooth)
    ours = DiceLoss()(logits, targets, smooth=smooth)
    assert ours.dim() == 0
    torch.testing.assert_close(ours, reference(logits, targets), atol=1e-5, rtol=0)


def test_the_losses_keep_float64_as_monai_does(monai_losses):
    logits = torch.randn(2, 1, 10, 10, dtype=torch.float64) * 2
    targets = (torch.rand(2, 1, 10, 10) > 0.6).double()
    monai_dice = monai_losses.DiceLoss(sigmoid=True, batch=True, smooth_nr=1, smooth_dr=1)(logits, targets)
    bce = nn.functional.binary_cross_entropy_with_logits(logits, targets)
    torch.testing.assert_close(DiceLoss()(logits, targets), monai_dice)  # dtype checked too
    torch.testing.assert_close(DiceCELoss()(logits, targets.bool()), 0.5 * monai_dice + 0.5 * bce)


def test_dice_loss_accepts_the_templates_squeezed_targets():
    logits, targets = torch.randn(2, 1, 8, 8), (torch.rand(2, 8, 8) > 0.5).float()
    torch.testing.assert_close(DiceLoss()(logits, targets), DiceLoss()(logits, targets[:, None]))


def test_dice_loss_extremes():
    targets = (torch.rand(2, 1, 8, 8) > 0.5).float()
    perfect = (targets * 2 - 1) * 50  # logits that saturate the sigmoid to the targets
    assert DiceLoss()(perfect, targets).item() == pytest.approx(0.0, abs=1e-6)
    assert DiceLoss()(-perfect, targets).item() == pytest.approx(1.0, abs=1e-2)


def test_dice_ce_loss_is_half_dice_half_bce():
    loss = DiceCELoss()
    assert isinstance(loss.diceLoss, DiceLoss) and isinstance(loss.ceLoss, BinaryCELoss)
    logits = torch.randn(2, 1, 10, 10)
    targets = (torch.rand(2, 1, 10, 10) > 0.6).float()
    dice = _dice_loss_by_the_formula(logits, targets, 1.0)
    bce = nn.functional.binary_cross_entropy_with_logits(logits, targets)
    torch.testing.assert_close(loss(logits, targets), 0.5 * dice + 0.5 * bce, atol=1e-5, rtol=0)
    torch.testing.assert_close(BinaryCELoss()(logits, targets.view(2, 10, 10)), bce)


def test_dice_ce_loss_against_monai(monai_losses):
    logits = torch.randn(2, 1, 10, 10)
    targets = (torch.rand(2, 1, 10, 10) > 0.6).float()
    monai_dice = monai_losses.DiceLoss(sigmoid=True, batch=True, smooth_nr=1, smooth_dr=1)(logits, targets)
    bce = nn.functional.binary_cross_entropy_with_logits(logits, targets)
    torch.testing.assert_close(DiceCELoss()(logits, targets), 0.5 * monai_dice + 0.5 * bce, atol=1e-5, rtol=0)


def test_gradients_flow_through_the_losses():
    for loss_fn in (DiceLoss(), DiceCELoss()):
        logits = torch.randn(2, 1, 8, 8, requires_grad=True)
        loss_fn(logits, (torch.rand(2, 1, 8, 8) > 0.5).float()).backward()
        assert logits.grad is not None and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_dice_loss_is_computed_in_float32_under_bf16_logits():
    logits = torch.randn(2, 1, 64, 64)
    targets = (torch.rand(2, 1, 64, 64) > 0.8).float()
    torch.testing.assert_close(DiceLoss()(logits.bfloat16(), targets), DiceLoss()(logits.bfloat16().float(), targets))
    assert DiceLoss()(logits.bfloat16(), targets).dtype == torch.float32


if __name__ == "__main__":
    raise SystemExit(pytest.main([__file__, "-q"]))
