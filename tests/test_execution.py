"""The execution is chosen by measurement: the fastest candidate that computes the same
thing, plain unless another is faster, remembered per machine and workload, and any
explicit flag is obeyed. (tests/test_bench.py checks that every candidate computes what
plain computes.)"""
import argparse

import torch

import execution
from execution import Execution, choose

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
    from training import step_maker
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
