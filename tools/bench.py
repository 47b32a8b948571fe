"""
Training-step benchmark: the template's plain execution against faster ones that
compute the same thing.

    python -m tools.bench --out bench.json [--device cpu|cuda] [--quick] [--models unet_512 ...]

Times full training steps (forward, loss, backward, AdamW step) of the steps the scripts
make (``BENCHMARKS``: the MLP and MobileNet on batches of 128 28-px images,
the UNet on 2 whole 512-px images and on the cpu profile's 2 patches, the
segmentation-models-pytorch ResNet-18 UNet on 2 512-px images), in every execution the
scripts choose from (``medimg.execution.candidates``):

- ``plain``: fp32, contiguous tensors, eager (the template).
- ``channels_last``: NHWC tensors, which oneDNN and cuDNN convolutions prefer.
- ``bf16``/``fp16``: autocast mixed precision (bf16 where the CPU has AVX512-BF16/AMX).
- ``..._compile`` (not with ``--quick``): the last of them under ``torch.compile``.
- ``auto``: what the scripts choose for this step on this machine (``execution.choose``,
  measured or remembered), measured as a row of its own.

Every configuration of a model is measured in turn, round after round (warm-up excluded),
so a load on the machine falls on all of them alike; each figure is the median of the
rounds, with its spread ``(Q3 - Q1) / median``. Prints a table and writes seconds per
step, spread, images per second, achieved TFLOP/s (FLOPs counted by
``torch.utils.flop_counter``) and the speed-up over ``plain``, with the machine, versions
and date. A remembered choice that the measurement here contradicts is forgotten
(``execution.recheck``), so the next run measures it again.
"""
import argparse
import datetime
import os
import statistics
import sys
import time
from typing import Optional

import torch
from torch.utils.flop_counter import FlopCounterMode

from medimg.cli import UserError, run_cli
from medimg.execution import (
    Execution,
    candidates,
    choose,
    measure_interleaved,
    pick_device,
    recheck,
    spread,
    time_steps,
)
from medimg.machine import cpu_supports_bf16, library_versions, machine_info
from medimg.registry import CPU_PATCH
from medimg.runfiles import write_json
from medimg.workloads import Workload

# The steps the benchmark and the profiler measure: the classifiers at PathMNIST's 28 px, the
# UNet on the assignment's whole 512-px images and on the cpu profile's batch of patches, and
# the segmentation-models-pytorch ResNet-18 UNet. (Here, not in medimg: no training run imports
# the run registry, so editing the list of runs never changes a run's code fingerprint.)
BENCHMARKS = {"mlp": Workload("mlp", 128, 28), "mobilenet": Workload("mobilenet", 128, 28),
              "unet_512": Workload("unet", 2, 512), "unet_crop": Workload("unet", 2, CPU_PATCH),
              "smp_unet_512": Workload("smp_unet", 2, 512)}


def configurations(device: torch.device, quick: bool) -> dict[str, tuple[Execution, bool]]:
    """Configuration name -> (execution, compiled): the scripts' candidates, and without
    ``quick`` the last of them (the native autocast dtype in channels_last where there is one)
    under ``torch.compile``."""
    configs = {name: (execution, False) for name, execution in candidates(device).items()}
    if not quick:
        last = list(configs)[-1]
        configs[f"{last}_compile"] = (configs[last][0], True)
    return configs


def count_flops(workload: Workload) -> int:
    """FLOPs of one fp32 forward + backward (the optimizer step is negligible)."""
    model = workload.wrap(workload.build())
    x, y = workload.sample()
    with FlopCounterMode(display=False) as counter:
        workload.loss()(model(x).float(), y).backward()
    return counter.get_total_flops()


def matmul_size(device: torch.device) -> int:
    # a 1024 product reaches only part of the peak here (MobileNet's step then exceeded it)
    return 8192 if device.type == "cuda" else 4096


def matmul_ceiling(device: torch.device, n: Optional[int] = None) -> dict[str, float]:
    """TFLOP/s of a large square matrix product (``n`` x ``n``, ``matmul_size`` by default) in
    each dtype the configurations use: the most this machine's math libraries deliver,
    against which each step is measured."""
    n = n or matmul_size(device)
    dtypes = {"float32": torch.float32}
    if device.type == "cuda" or cpu_supports_bf16():
        dtypes["bfloat16"] = torch.bfloat16
    if device.type == "cuda":
        dtypes["float16"] = torch.float16
    ceiling = {}
    for name, dtype in dtypes.items():
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        seconds, _ = time_steps(lambda: a @ b, device, warmup=2, repeats=5)
        ceiling[name] = 2 * n ** 3 / seconds / 1e12
    return ceiling


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="the JSON file to write")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--quick", action="store_true", help="five rounds, no torch.compile")
    parser.add_argument("--models", nargs="+", choices=list(BENCHMARKS), default=list(BENCHMARKS))
    parser.add_argument("--configs", nargs="+", help="only these configurations (plain is always run)")
    parser.add_argument("--remeasure", action="store_true",
                        help="measure auto's choice afresh instead of reusing the one remembered on this machine")
    args = parser.parse_args(argv)
    device = pick_device(args.device)

    configs = configurations(device, args.quick)
    if args.configs:
        unknown = set(args.configs) - set(configs) - {"auto"}
        if unknown:
            raise UserError(f"unknown configuration(s) {', '.join(sorted(unknown))} on {device.type}; "
                            f"choose from auto, {', '.join(configs)}")
        configs = {k: v for k, v in configs.items() if k == "plain" or k in args.configs}
    with_auto = not args.configs or "auto" in args.configs
    rounds = 5 if args.quick else 9
    started = time.perf_counter()
    ceiling = matmul_ceiling(device)
    print("matrix-product ceiling: " + ", ".join(f"{k} {v:.3f} TFLOP/s" for k, v in ceiling.items()))
    print(f"medians of {rounds} interleaved rounds; spread = (Q3 - Q1) / median of the rounds")
    results = []
    print(f"{'model':<14}{'config':<28}{'s/step':>9}{'spread':>8}{'img/s':>9}{'TFLOP/s':>9}{'of matmul':>10}"
          f"{'speedup':>9}")
    for model_name in args.models:
        workload = BENCHMARKS[model_name]
        flops = count_flops(workload)
        torch.manual_seed(0)
        model = workload.build()  # one set of weights: every configuration trains its own copy of it
        model_configs, selection = dict(configs), None
        if with_auto:
            chosen, selection = choose(device, workload.name, workload.step_maker(model), remeasure=args.remeasure)
            model_configs["auto"] = (chosen, False)
        steps = {name: workload.step_maker(model, compiled)(execution)
                 for name, (execution, compiled) in model_configs.items()}
        warmup = 3 if any(compiled for _, compiled in model_configs.values()) else 1  # compilation: 3 calls
        times, failures = measure_interleaved(steps, device, rounds, warmup)
        del steps
        plain_seconds = statistics.median(times["plain"]) if "plain" in times else None
        for name, failure in failures.items():
            print(f"{model_name:<14}{name:<28}failed: {failure}")
        for config_name, round_times in times.items():
            execution, compiled = model_configs[config_name]
            seconds = statistics.median(round_times)
            dtype = str(execution.amp_dtype).replace("torch.", "") if execution.amp_dtype else "float32"
            tflops = flops / seconds / 1e12
            record = {"model": model_name, "config": config_name, "workload": workload.name,
                      "batch_size": workload.batch_size, "image_size": workload.side,
                      "autocast": str(execution.amp_dtype) if execution.amp_dtype else None,
                      "channels_last": execution.channels_last, "compile": compiled,
                      "seconds_per_step": seconds, "spread": spread(round_times), "all_times": round_times,
                      "images_per_second": workload.batch_size / seconds, "flops_per_step": flops,
                      "tflops": tflops, "speedup": plain_seconds / seconds if plain_seconds else None,
                      "fraction_of_matmul": tflops / ceiling[dtype] if dtype in ceiling else None}
            label = config_name
            if config_name == "auto":
                record["selection"] = {k: v for k, v in selection.items() if k not in ("key", "cache")}
                label = f"auto = {selection['chosen']} ({selection['how'].split(' in ')[0]})"
            results.append(record)
            fraction = f"{record['fraction_of_matmul']:.2f}" if record["fraction_of_matmul"] is not None else "n/a"
            speedup = f"{record['speedup']:.2f}x" if record["speedup"] else "n/a"
            print(f"{model_name:<14}{label:<28}{seconds:>9.4f}{record['spread']:>7.1%}{record['images_per_second']:>9.1f}"
                  f"{tflops:>9.3f}{fraction:>10}{speedup:>9}", flush=True)
        if selection and "auto" in times and selection["chosen"] in times:
            auto, named = results[-1], next(r for r in results[::-1] if r["model"] == model_name
                                            and r["config"] == selection["chosen"])
            # the same execution measured in the same rounds: apart by no more than their spreads
            apart = abs(auto["seconds_per_step"] - named["seconds_per_step"]) / named["seconds_per_step"]
            auto["agrees_with_named"] = apart <= max(auto["spread"], named["spread"])
            print(f"{'':<14}auto and {selection['chosen']} differ by {apart:.1%} "
                  f"({'within' if auto['agrees_with_named'] else 'outside'} their spreads)")
            if recheck(selection, auto["seconds_per_step"]):
                auto["forgotten"] = True
    write_json(args.out, {
        # the ISA limits that make one machine stand in for another are part of the command
        "command": " ".join([*(f"{k}={os.environ[k]}" for k in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")
                               if os.environ.get(k)),
                             "python -m tools.bench", *(sys.argv[1:] if argv is None else argv)]),
        "device": str(device), "machine": machine_info(device),
        "versions": library_versions("segmentation_models_pytorch"),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "seconds": time.perf_counter() - started, "matmul_tflops": ceiling, "rounds": rounds,
        "spread": "(Q3 - Q1) / median of the rounds", "matmul_size": matmul_size(device),
        "results": results,
    })


if __name__ == "__main__":
    run_cli(main)
