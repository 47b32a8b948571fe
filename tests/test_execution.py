"""The execution is chosen by measurement: the fastest candidate that computes the same
thing, plain unless another is faster, remembered per machine and workload, and any
explicit flag is obeyed. (tests/test_bench.py checks that every candidate computes what
plain computes.)"""
import argparse

import pytest
import torch

from medimg import execution
from medimg.execution import Execution, choose

CPU = torch.device("cpu")


def fake_timer(seconds):
    """A timer that reports the given seconds per candidate (by its name) without running it."""
    def timer(step, device):
        name = step()
        if isinstance(seconds[name], Exception):
            raise seconds[name]
        return seconds[name]
    return timer


def named_steps(execution_):
    names = {e: n for n, e in execution.candidates(CPU).items()}
    return lambda: names[execution_]


def test_the_fastest_candidate_is_chosen_and_remembered(tmp_path, monkeypatch):
    options = execution.candidates(CPU)
    seconds = {name: 1.0 for name in options}
    seconds["channels_last"] = 0.5
    chosen, record = choose(CPU, "w", named_steps, timer=fake_timer(seconds), cache=tmp_path / "c.json")
    assert chosen == options["channels_last"] and record["how"] == "measured"
    assert record["seconds_per_step"] == seconds
    # remembered: the next run does not measure at all
    again, record = choose(CPU, "w", named_steps, timer=None, cache=tmp_path / "c.json")
    assert again == chosen and record["how"].startswith("remembered")
    # another workload is measured afresh
    seconds["channels_last"] = 2.0
    other, _ = choose(CPU, "other", named_steps, timer=fake_timer(seconds), cache=tmp_path / "c.json")
    assert other == options["plain"]


def test_plain_is_kept_when_nothing_is_faster_or_a_candidate_fails(tmp_path):
    options = execution.candidates(CPU)
    seconds = {name: 2.0 for name in options}
    seconds["plain"] = 1.0
    if "bf16" in options:
        seconds["bf16"] = RuntimeError("no kernel for this dtype")
    chosen, record = choose(CPU, "w", named_steps, timer=fake_timer(seconds), cache=tmp_path / "c.json")
    assert chosen == options["plain"]
    if "bf16" in options:
        assert "bf16" in record["failed"] and "bf16" not in record["seconds_per_step"]
    # every candidate but plain fails: plain
    seconds = {name: RuntimeError("broken") for name in options}
    seconds["plain"] = 5.0
    chosen, _ = choose(CPU, "w2", named_steps, timer=fake_timer(seconds), cache=tmp_path / "c.json")
    assert chosen == options["plain"]


def test_explicit_flags_narrow_the_candidates():
    assert set(execution.candidates(CPU, amp="off", channels_last="off")) == {"plain"}
    assert set(execution.candidates(CPU, amp="off")) == {"plain", "channels_last"}
    assert all(e.channels_last for e in execution.candidates(CPU, channels_last="on").values())
    assert all(e.amp_dtype == torch.bfloat16 for e in execution.candidates(CPU, amp="bf16").values())
    args = argparse.Namespace(plain=True, amp="auto", channels_last="auto")
    chosen, record = execution.from_args(args, CPU, "w", make_step=None)
    assert chosen == Execution.plain(CPU) and record["how"] == "--plain"


def test_a_real_measurement_leaves_the_random_stream_alone(tmp_path):
    from medimg.training import step_maker
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 1, 1))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.rand(2, 3, 16, 16), (torch.rand(2, 1, 16, 16) > 0.5).float()
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    chosen, record = choose(CPU, "tiny", step_maker(model, x, y, torch.nn.functional.binary_cross_entropy_with_logits),
                            cache=tmp_path / "c.json")
    assert torch.equal(torch.rand(3), expected)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # a copy was trained
    assert record["chosen"] in execution.candidates(CPU) and set(record["seconds_per_step"]) == set(
        execution.candidates(CPU))


def test_the_gpu_step_skips_a_non_finite_update_on_the_device_and_otherwise_matches_the_host_path():
    """What a GPU run gets (a fused AdamW and a scaler fixed at 1, ``training_step`` never
    reading the loss), run on the CPU where both exist: the same updates as the host-checked
    path, and a NaN batch leaves weights and Adam's step count alone."""
    from medimg.training import training_step
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 1, 1))
    plain = Execution.plain(CPU)
    host, device_side = net, __import__("copy").deepcopy(net)
    host_opt = torch.optim.AdamW(host.parameters(), lr=1e-2)
    device_opt = torch.optim.AdamW(device_side.parameters(), lr=1e-2, fused=True)
    host_scaler = plain.grad_scaler()
    device_scaler = torch.amp.GradScaler("cpu", init_scale=1.0, growth_interval=2 ** 30)  # as grad_scaler() on CUDA
    assert not host_scaler.is_enabled()
    x, y = torch.randn(2, 3, 8, 8), (torch.rand(2, 1, 8, 8) > 0.5).float()
    poisoned = x.clone()
    poisoned[0, 0, 0, 0] = float("nan")
    loss_fn = torch.nn.BCEWithLogitsLoss()
    for batch in (x, x, poisoned, x):
        before = [p.detach().clone() for p in device_side.parameters()]
        a, _ = training_step(host, batch, y, loss_fn, host_opt, host_scaler, plain)
        b, _ = training_step(device_side, batch, y, loss_fn, device_opt, device_scaler, plain)
        assert isinstance(b, torch.Tensor) and b.dim() == 0 and not b.requires_grad
        if batch is poisoned:
            assert b.isnan() and a.isnan()
            assert all(torch.equal(p, q) for p, q in zip(before, device_side.parameters()))
        else:
            assert b.item() == pytest.approx(a.item(), abs=1e-6)
    first = next(device_side.parameters())
    assert device_opt.state[first]["step"].item() == 3 == host_opt.state[next(host.parameters())]["step"].item()
    for p, q in zip(host.parameters(), device_side.parameters()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5)


def test_a_gpu_run_gets_the_fused_optimizer_and_an_exact_scaler(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # GradScaler disables itself without CUDA
    cuda = Execution(torch.device("cuda"), torch.bfloat16, True)  # nothing is allocated on the GPU
    scaler = cuda.grad_scaler()
    assert scaler.is_enabled() and scaler._init_scale == 1.0 and cuda.optimizer_options() == {"fused": True}
    assert Execution.plain(CPU).optimizer_options() == {} and not Execution.plain(CPU).grad_scaler().is_enabled()
