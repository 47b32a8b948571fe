"""The fast configurations compute what the plain one computes, within bf16 tolerance,
so a speed-up can never silently change the math; and bench.py writes its record."""
import json
import sys

import pytest
import torch

from medimg import execution
from tools import bench

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def small_shapes(monkeypatch):
    # Large enough that BatchNorm's batch statistics (MobileNet, ResNet-18) are taken over
    # dozens of values: over two or three, BN turns rounding noise into order-one changes.
    monkeypatch.setattr(bench, "SHAPES", {"mlp": (8, 28), "mobilenet": (16, 64), "unet_512": (2, 32),
                                          "unet_crop": (2, 32), "smp_unet_512": (4, 128)})


def _one_step(model_name, config):
    step, model, x, _ = bench.make_step(model_name, config, CPU, seed=0)
    model.eval()  # first the forward pass with BatchNorm's running statistics
    with torch.no_grad(), bench.Execution(CPU, config[0]).autocast():
        out = model(x).float()
    # BatchNorm keeps its running statistics in the step too: at initialisation the deep
    # features barely vary across a batch, and batch statistics would blow rounding noise up
    # into order-one changes, a property of the untrained network rather than of the fast path.
    model.train()
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()
    loss, _ = step()
    grads = torch.cat([p.grad.float().flatten() for p in model.parameters()])
    return loss.float(), out, grads


# every configuration the scripts or the benchmark may choose, checked on any CPU (bf16 is
# emulated where the CPU lacks it: slow, but the same arithmetic)
CANDIDATES = {"channels_last": (None, True, False), "bf16": (torch.bfloat16, False, False),
              "bf16_channels_last": (torch.bfloat16, True, False)}


@pytest.mark.parametrize("model_name", ["mlp", "mobilenet", "unet_512", "smp_unet_512"])
@pytest.mark.parametrize("config_name", sorted(CANDIDATES))
def test_fast_configuration_matches_plain(model_name, config_name):
    loss_plain, out_plain, grads_plain = _one_step(model_name, (None, False, False))
    loss_fast, out_fast, grads_fast = _one_step(model_name, CANDIDATES[config_name])
    bf16 = CANDIDATES[config_name][0] is not None
    # bf16 keeps 8 bits of mantissa; fp32 in another memory layout only sums in another order
    tol = dict(rtol=5e-2, atol=5e-2) if bf16 else dict(rtol=1e-4, atol=1e-4)
    scale = out_plain.abs().max().clamp_min(1e-3)  # outputs relative to their spread
    torch.testing.assert_close(out_fast / scale, out_plain / scale, **tol)
    torch.testing.assert_close(loss_fast, loss_plain, **tol)
    cosine = torch.nn.functional.cosine_similarity(grads_fast, grads_plain, dim=0).item()
    assert cosine > (0.99 if bf16 else 0.9999), cosine


def test_bench_writes_its_record(tmp_path, monkeypatch):
    out = tmp_path / "bench.json"
    monkeypatch.setattr(sys, "argv", ["bench.py", "--out", str(out), "--quick", "--models", "mlp", "mobilenet",
                                      "--configs", "channels_last"])
    bench.main()
    record = json.loads(out.read_text())
    assert {"machine", "versions", "date", "results"} <= set(record)
    rows = record["results"]
    assert {(r["model"], r["config"]) for r in rows} == {(m, c) for m in ("mlp", "mobilenet")
                                                         for c in ("plain", "channels_last")}
    assert record["matmul_tflops"]["float32"] > 0
    for r in rows:
        assert r["seconds_per_step"] > 0 and r["tflops"] > 0 and r["speedup"] > 0
        assert r["flops_per_step"] > 0
        assert r["fraction_of_matmul"] == pytest.approx(r["tflops"] / record["matmul_tflops"]["float32"])
    assert all(r["speedup"] == 1.0 for r in rows if r["config"] == "plain")


def test_bench_auto_is_what_the_scripts_choose(tmp_path):
    out = tmp_path / "bench.json"
    bench.main(["--out", str(out), "--quick", "--models", "mlp", "--configs", "auto"])
    rows = json.loads(out.read_text())["results"]
    assert [r["config"] for r in rows] == ["plain", "auto"]
    auto = rows[1]
    chosen = execution.candidates(CPU)[auto["selection"]["chosen"]]
    assert (auto["autocast"] is not None) == (chosen.amp_dtype is not None)
    assert auto["channels_last"] == chosen.channels_last


def test_choosing_the_memory_format_per_layer_changes_layouts_not_numbers():
    """profile_step.with_layer_formats: some convolutions in channels_last, the rest
    contiguous, computes what the plain UNet computes (outputs and gradients)."""
    import copy

    from tools import profile_step
    from unet import UNet
    torch.manual_seed(0)
    plain = UNet(3, 1)
    x = torch.randn(2, 3, 32, 32)
    convs = [n for n, m in plain.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    mixed = profile_step.with_layer_formats(copy.deepcopy(plain), convs[::2])
    assert mixed.encoder_block1[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert not mixed.encoder_block1[2].weight.is_contiguous(memory_format=torch.channels_last)
    outputs = [model(x) for model in (plain, mixed)]
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-4, atol=1e-5)
    for out in outputs:
        out.square().mean().backward()
    for (name, p), q in zip(plain.named_parameters(), mixed.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-3, atol=1e-6, msg=name)


def test_profiler_operators_are_sorted_into_kinds():
    from tools import profile_step
    assert profile_step.kind_of("aten::convolution_backward", [[8, 64, 128, 128], [8, 64, 128, 128], [64, 64, 3, 3]]) \
        == "conv 3x3 backward"
    assert profile_step.kind_of("aten::mkldnn_convolution", [[8, 128, 64, 64], [64, 128, 2, 2], [64]]) \
        == "conv 2x2 transposed forward"
    assert profile_step.kind_of("aten::cat", [[], []]) == "concatenation"
    assert profile_step.kind_of("aten::threshold_backward", [[1]]) == "ReLU"
