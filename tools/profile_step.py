"""
Where the time of a UNet training step goes on this CPU, and whether choosing the memory
format layer by layer beats one format for the whole network.

    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python -m tools.profile_step --out runs/cpu/bench/profile_avx2.json

(The two variables make a CPU with AVX-512 behave as one with AVX2 only: no native bf16.)

1. ``torch.profiler`` over a few steps of ``plain`` and ``channels_last``: the self time of
   every operator, summed by kind (3x3 convolutions forward and backward, the transposed
   convolutions, concatenation, ReLU, pooling, loss, optimizer, layout copies).
2. Every convolution of the UNet alone (forward and backward on its own input shape) in
   both formats, measured alternately so that a load on the machine hits both alike.
3. The whole step with each convolution in the format it was faster in alone
   (``per_layer``), against ``plain`` and ``channels_last``, again alternately.
4. The other settings a run could change: ``plain`` under ``torch.compile`` (with the
   seconds its compilation costs) and ``plain`` on one thread fewer.

Layouts only: every execution computes the same numbers (the tests check it).
"""
import argparse
import copy
import datetime
import os
import statistics
import sys
import time

import torch
import torch.nn as nn
from torch.profiler import ProfilerActivity
from torch.profiler import profile as torch_profile

from medimg.cli import run_cli
from medimg.execution import Execution, measure_interleaved
from medimg.machine import library_versions, machine_info
from medimg.runfiles import write_json
from medimg.workloads import Workload
from tools.bench import BENCHMARKS

CL = torch.channels_last


def kind_of(name, shapes):
    """The operator's kind, from its name and input shapes (weights ``[o, i, 2, 2]`` are the
    transposed convolutions' 2x2 kernels, ``[o, i, 1, 1]`` the output layer)."""
    if "convolution" in name:
        weight = next((s for s in shapes if len(s) == 4 and s[-1] in (1, 2, 3)), None)
        size = {3: "3x3", 2: "2x2 transposed", 1: "1x1"}.get(weight[-1] if weight else 0, "other")
        return f"conv {size} {'backward' if 'backward' in name else 'forward'}"
    for key, kind in (("cat", "concatenation"), ("relu", "ReLU"), ("threshold_backward", "ReLU"),
                      ("max_pool", "max pooling"), ("adam", "optimizer"), ("_foreach", "optimizer"),
                      ("copy_", "layout copies"), ("clone", "layout copies"), ("contiguous", "layout copies"),
                      ("binary_cross_entropy", "loss"), ("sigmoid", "loss")):
        if key in name:
            return kind
    return "other"


def profile(step, steps=2):
    """Self CPU seconds per step by operator kind, and the ten costliest operators."""
    step()
    with torch_profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(steps):
            step()
    by_kind, rows = {}, []
    for event in prof.key_averages(group_by_input_shape=True):
        seconds = event.self_cpu_time_total / 1e6 / steps
        kind = kind_of(event.key, event.input_shapes or [])
        by_kind[kind] = by_kind.get(kind, 0.0) + seconds
        rows.append({"op": event.key, "kind": kind, "shapes": str(event.input_shapes)[:120], "seconds": seconds})
    rows.sort(key=lambda r: -r["seconds"])
    return dict(sorted(by_kind.items(), key=lambda kv: -kv[1])), rows[:10]


def alternately(steps, rounds):
    """Median seconds of each named step, measured in turn ``rounds`` times (warm-up first)."""
    times, _ = measure_interleaved(steps, torch.device("cpu"), rounds)
    return {name: statistics.median(t) for name, t in times.items()}


def convolution_inputs(model, x):
    """Each convolution module's name and input shape on the batch ``x``."""
    shapes, hooks = {}, []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            hooks.append(module.register_forward_pre_hook(
                lambda m, args, name=name: shapes.update({name: tuple(args[0].shape)})))  # None: args unchanged
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    return shapes


def layer_step(module, shape, channels_last):
    """Forward and backward of one convolution alone, in one memory format."""
    layer = copy.deepcopy(module)
    x = torch.randn(shape, requires_grad=True)
    if channels_last:
        layer = layer.to(memory_format=CL)
        x = x.detach().contiguous(memory_format=CL).requires_grad_()
    grad = torch.randn_like(layer(x))

    def step():
        layer.zero_grad(set_to_none=True)
        x.grad = None
        layer(x).backward(grad)
    return step


def with_layer_formats(model, channels_last_layers):
    """``model`` with the named convolutions in channels_last (weights and inputs) and every
    other convolution contiguous: each layer converts its input to its own format."""
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            fmt = CL if name in channels_last_layers else torch.contiguous_format
            module.to(memory_format=fmt)
            module.register_forward_pre_hook(lambda m, args, fmt=fmt: (args[0].contiguous(memory_format=fmt),))
    return model


def whole_step(channels_last_layers, workload: Workload, seed=0, compiled=False):
    """One training step of the workload with the given convolutions in channels_last."""
    torch.manual_seed(seed)
    model = with_layer_formats(workload.build(), channels_last_layers)
    return workload.step_maker(model, compiled)(Execution.plain(torch.device("cpu")))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="the JSON file to write")
    parser.add_argument("--model", choices=["unet_crop", "unet_512"], default="unet_crop",
                        help="the benchmark's UNet step (tools.bench.BENCHMARKS)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating measurements per execution")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    device = torch.device("cpu")
    workload = BENCHMARKS[args.model]

    print("1. torch.profiler, self CPU seconds per step by kind")
    profiles = {}
    for name, channels_last in (("plain", False), ("channels_last", True)):
        step = workload.step_maker()(Execution(device, None, channels_last))
        by_kind, top = profile(step)
        profiles[name] = {"by_kind": by_kind, "top_operators": top, "total": sum(by_kind.values())}
        print(f"  {name}: " + ", ".join(f"{k} {v:.2f}" for k, v in by_kind.items() if v > 0.01))

    print("2. each convolution alone, forward + backward, seconds (contiguous / channels_last)")
    model = workload.build()
    x, _ = workload.sample()
    layers = {}
    for name, shape in convolution_inputs(model, x).items():
        module = model.get_submodule(name)
        t = alternately({"contiguous": layer_step(module, shape, False),
                         "channels_last": layer_step(module, shape, True)}, args.rounds)
        layers[name] = {"input": list(shape), "kernel": list(module.kernel_size),
                        "transposed": isinstance(module, nn.ConvTranspose2d), **t}
        print(f"  {name:<28}{str(shape):<22}{t['contiguous']:8.3f}{t['channels_last']:8.3f}")
    faster_in_cl = [name for name, r in layers.items() if r["channels_last"] < r["contiguous"]]

    print("3. the whole step, seconds")
    all_convs = list(layers)
    whole = alternately({"plain": whole_step([], workload), "channels_last": whole_step(all_convs, workload),
                         "per_layer": whole_step(faster_in_cl, workload)}, args.rounds)
    for name, seconds in whole.items():
        print(f"  {name:<14}{seconds:8.3f}  ({whole['plain'] / seconds:.2f}x plain)")

    print("4. torch.compile and threads, seconds per step")
    threads = torch.get_num_threads()
    compiled_step = whole_step([], workload, compiled=True)
    start = time.perf_counter()
    compiled_step()  # the first call compiles
    compile_seconds = time.perf_counter() - start
    other = alternately({"plain": whole_step([], workload), "plain_compiled": compiled_step}, args.rounds)
    if threads > 1:
        torch.set_num_threads(threads - 1)
        other[f"plain_{threads - 1}_threads"] = alternately({"s": whole_step([], workload)}, args.rounds)["s"]
        torch.set_num_threads(threads)
    for name, seconds in other.items():
        print(f"  {name:<20}{seconds:8.3f}  ({other['plain'] / seconds:.2f}x plain)")
    print(f"  compilation: {compile_seconds:.1f} s")

    write_json(args.out, {
        "command": " ".join([*(f"{k}={os.environ[k]}" for k in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")
                               if os.environ.get(k)),
                             "python -m tools.profile_step", *(sys.argv[1:] if argv is None else argv)]),
        "model": args.model, "workload": workload.name, "batch": [workload.batch_size, workload.side], "machine": machine_info(device),
        "versions": library_versions(), "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "seconds": time.perf_counter() - started, "profiles": profiles, "layers": layers,
        "channels_last_layers": faster_in_cl, "whole_step_seconds": whole,
        "other_settings_seconds": other, "compile_seconds": compile_seconds, "threads": threads,
        "note": "per_layer puts in channels_last the convolutions that were faster so alone; "
                "medians of alternating measurements"})


if __name__ == "__main__":
    run_cli(main)
