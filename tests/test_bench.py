"""The fast configurations compute what the plain one computes, within bf16 tolerance,
so a speed-up can never silently change the math; bench.py measures the scripts' own steps
and candidates and writes its record."""
import functools
import json
import sys

import pytest
import torch

from medimg import execution
from medimg.execution import Execution
from medimg.options import parse_classification_args, parse_segmentation_args
from medimg.registry import plan
from medimg.training import training_step
from medimg.workloads import Workload
from tools import bench
from tools.bench import BENCHMARKS  # the real ones: the tests patch bench's

CPU = torch.device("cpu")

# Large enough that BatchNorm's batch statistics (MobileNet, ResNet-18) are taken over
# dozens of values: over two or three, BN turns rounding noise into order-one changes. The
# UNet at a quarter of its width (2 million weights, not 31): every layer kind of the graded
# one, and bf16, emulated on CPUs without it, costs seconds instead of tens. smp's UNet with
# the encoder the cpu plan trains (EfficientNet-Lite0: 5 million weights; ResNet-18's 14
# took 4.5 s of emulated bf16 against 2.8).
SMALL = {"mlp": Workload("mlp", 8, 28), "mobilenet": Workload("mobilenet", 16, 64),
         "unet_512": Workload("unet", 2, 32, base_channels=16), "unet_crop": Workload("unet", 2, 32, base_channels=16),
         "smp_unet_512": Workload("smp_unet", 4, 64, "efficientnet-lite0")}


@pytest.fixture(autouse=True)
def small_shapes(monkeypatch, tmp_path):
    monkeypatch.setattr(bench, "BENCHMARKS", SMALL)
    ceiling = bench.matmul_ceiling
    monkeypatch.setattr(bench, "matmul_ceiling", lambda device: ceiling(device, n=512))  # 4096 takes seconds
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # auto's choice: not the user's cache


@functools.lru_cache(maxsize=None)  # the plain step of a model is the reference of three tests: made once
def _one_step(model_name, config):
    workload, (amp_dtype, channels_last) = SMALL[model_name], config
    setting = Execution(CPU, amp_dtype, channels_last)
    torch.manual_seed(0)
    model = setting.prepare(workload.build())
    x, y = workload.sample()
    x, scores = setting.to_input(x), workload.wrap(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scores.eval()  # first the forward pass with BatchNorm's running statistics
    with torch.no_grad(), setting.autocast():
        out = scores(x).float()
    # BatchNorm keeps its running statistics in the step too: at initialisation the deep
    # features barely vary across a batch, and batch statistics would blow rounding noise up
    # into order-one changes, a property of the untrained network rather than of the fast path.
    model.train()
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()
    loss, _ = training_step(scores, x, y, workload.loss(), optimizer, setting.grad_scaler(), setting)
    grads = torch.cat([p.grad.float().flatten() for p in model.parameters()])
    return loss.float(), out, grads


# every configuration the scripts or the benchmark may choose, checked on any CPU (bf16 is
# emulated where the CPU lacks it: slow, but the same arithmetic)
CANDIDATES = {"channels_last": (None, True), "bf16": (torch.bfloat16, False), "bf16_channels_last": (torch.bfloat16, True)}


@pytest.mark.parametrize("model_name", ["mlp", "mobilenet", "unet_512", "smp_unet_512"])
@pytest.mark.parametrize("config_name", sorted(CANDIDATES))
def test_fast_configuration_matches_plain(model_name, config_name):
    loss_plain, out_plain, grads_plain = _one_step(model_name, (None, False))
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
    monkeypatch.setattr(bench, "BENCHMARKS", {**SMALL, "mobilenet": Workload("mobilenet", 4, 32)})  # seconds, not tens
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
        assert len(r["all_times"]) == record["rounds"] == 5 and r["spread"] >= 0
        assert r["workload"] == bench.BENCHMARKS[r["model"]].name
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
    assert auto["selection"]["how"] == "measured" and set(auto["selection"]["spread"]) == set(execution.candidates(CPU))
    # the scripts' own choice for this step: remembered under the scripts' name, unless bench's own
    # rounds contradicted it (a loaded machine), which forgets it for the next run to measure again
    cache = json.loads(execution.cache_file().read_text())
    mine = [record for key, record in cache.items() if f"| {SMALL['mlp'].name} |" in key]
    if auto.get("forgotten"):
        assert mine == []
    else:
        assert len(mine) == 1 and mine[0]["chosen"] == auto["selection"]["chosen"]


def test_bench_measures_the_steps_the_scripts_make():
    """Every benchmark workload is the step some run of a profile times, under the same name,
    so bench's ``auto`` is the choice that run makes and remembers."""
    timed = set()
    for profile in ("cpu", "gpu"):
        for script, arguments in plan(profile, "data/retina", "data").values():
            if script == "main_classification.py":
                timed.add(Workload.of_classification(parse_classification_args([*arguments, "--logdir", "x"])).name)
            elif script == "main_segmentation.py":
                args = parse_segmentation_args([*arguments, "--logdir", "x"])
                timed.add(Workload.of_segmentation(args, args.crop_size or args.image_size or 512).name)
    assert {w.name for w in BENCHMARKS.values()} <= timed


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


def test_throughput_times_every_candidate_in_process():
    from tools import throughput
    figures = throughput._time(side=32, threads=1, rounds=1, image_side=64)
    assert set(figures) == set(execution.candidates(CPU))
    assert all(f["step"] > 0 and f["image"] > 0 for f in figures.values())
