"""
Training-step benchmark: the template's plain execution against faster ones that
compute the same thing.

    python -m tools.bench --out bench.json [--device cpu|cuda] [--quick] [--models unet_512 ...]

Times full training steps (forward, loss, backward, AdamW step; warm-up excluded;
median of repeats) of the MLP and MobileNet (batch 128, 3x28x28), the UNet (batch 2
at 512x512, and the CPU profile's batch of 8 random 128x128 crops) and the
segmentation-models-pytorch ResNet-18 UNet (batch 2, 512x512), each in several
configurations:

- ``plain``: fp32, contiguous tensors, eager (the template).
- ``channels_last``: NHWC tensors, which oneDNN and cuDNN convolutions prefer.
- ``bf16``/``fp16``: autocast mixed precision (bf16 where the CPU has AVX512-BF16/AMX).
- ``..._compile``: the same under ``torch.compile``.

Prints a table and writes seconds per step, images per second, achieved TFLOP/s
(FLOPs counted by ``torch.utils.flop_counter``) and the speed-up over ``plain`` measured
in the same run, with the machine, versions and date.
"""
import argparse
import datetime
import os
import time

import torch
import torch.nn as nn

from medimg.cli import UserError, run_cli
from medimg.execution import Execution, choose, pick_device, time_steps
from medimg.machine import cpu_supports_bf16, library_versions, machine_info
from medimg.runfiles import write_json
from medimg.training import training_step

# model name -> (batch size, image size)
SHAPES = {"mlp": (128, 28), "mobilenet": (128, 28), "unet_512": (2, 512), "unet_crop": (8, 128),
          "smp_unet_512": (2, 512)}


def build(model_name):
    """A fresh model and its loss; ``targets`` makes a matching batch of labels."""
    if model_name == "mlp":
        from mlp import MLP
        return MLP(3 * 28 * 28, [1024, 512, 64, 64], 9), nn.CrossEntropyLoss()
    if model_name == "mobilenet":
        from medimg.classification_models import Scores
        from mobileNet import MobileNet
        return Scores(MobileNet(9)), nn.CrossEntropyLoss()  # trained on logits, as main_classification.py does
    from utils import DiceCELoss
    if model_name.startswith("unet"):
        from unet import UNet
        return UNet(3, 1), DiceCELoss()
    import segmentation_models_pytorch as smp
    return smp.Unet(encoder_name="resnet18", encoder_weights=None, in_channels=3, classes=1), DiceCELoss()


def batch(model_name, device, generator=None):
    n, size = SHAPES[model_name]
    x = torch.randn(n, 3, size, size, generator=generator)
    if model_name in ("mlp", "mobilenet"):
        y = torch.randint(0, 9, (n,), generator=generator)
    else:
        y = (torch.rand(n, 1, size, size, generator=generator) > 0.88).float()
    return x.to(device), y.to(device)


def configs_for(device):
    """Configuration name -> (autocast dtype, channels_last, compile)."""
    fast = torch.bfloat16 if device.type == "cpu" and cpu_supports_bf16() else None
    if device.type == "cuda":
        fast = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    configs = {"plain": (None, False, False), "channels_last": (None, True, False)}
    if fast is not None:
        name = "bf16" if fast == torch.bfloat16 else "fp16"
        configs[name] = (fast, False, False)
        configs[f"{name}_channels_last"] = (fast, True, False)
        configs[f"{name}_channels_last_compile"] = (fast, True, True)
    else:
        configs["channels_last_compile"] = (None, True, True)
    return configs


def make_step(model_name, config, device, seed=0):
    """A closure running one training step; returns (step, model, inputs, targets)."""
    amp_dtype, channels_last, compiled = config
    torch.manual_seed(seed)
    model, loss_fn = build(model_name)
    model = model.to(device)
    x, y = batch(model_name, device, torch.Generator().manual_seed(seed))
    setting = Execution(device, amp_dtype, channels_last and x.dim() == 4 and model_name != "mlp")
    model, x = setting.prepare(model), setting.to_input(x)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=5e-4, **setting.optimizer_options())
    scaler = setting.grad_scaler()
    forward = torch.compile(model) if compiled else model

    def step():
        loss, out = training_step(forward, x, y, loss_fn, optimizer, scaler, setting)
        return loss, out.detach()

    return step, model, x, y


def count_flops(model_name, device):
    """FLOPs of one fp32 forward + backward (the optimizer step is negligible)."""
    from torch.utils.flop_counter import FlopCounterMode
    model, loss_fn = build(model_name)
    model = model.to(device)
    x, y = batch(model_name, device)
    with FlopCounterMode(display=False) as counter:
        loss_fn(model(x).float(), y).backward()
    return counter.get_total_flops()


# the workload names main_segmentation.py / main_classification.py give the same model and shape,
# so that ``auto`` is the very choice the scripts make (and remember) on this machine
SCRIPT_WORKLOADS = {"mlp": "mlp batch 128 28x28", "mobilenet": "mobilenet batch 128 28x28",
                    "unet_512": "unet batch 2 512x512", "unet_crop": "unet batch 8 128x128",
                    "smp_unet_512": "smp_unet/resnet18 batch 2 512x512"}


def auto_config(model_name, device):
    """What the training scripts choose by default for this model and shape (measured, or
    remembered from an earlier run on this machine), as a configuration tuple."""
    def make(execution_):
        return make_step(model_name, (execution_.amp_dtype, execution_.channels_last, False), device)[0]
    chosen, record = choose(device, SCRIPT_WORKLOADS[model_name], make)
    return (chosen.amp_dtype, chosen.channels_last, False), record


def matmul_ceiling(device, quick=False):
    """TFLOP/s of a large square matrix product in each dtype the configurations use: the
    most this machine's math libraries deliver, against which each step is measured."""
    # a 1024 product reaches only part of the peak here (MobileNet's step then exceeded it)
    n = 8192 if device.type == "cuda" else 4096
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
    parser.add_argument("--quick", action="store_true", help="fewer repeats, no torch.compile")
    parser.add_argument("--models", nargs="+", choices=list(SHAPES), default=list(SHAPES))
    parser.add_argument("--configs", nargs="+", help="only these configurations (plain is always run)")
    args = parser.parse_args(argv)
    device = pick_device(args.device)

    configs = configs_for(device)
    if args.quick:
        configs = {k: v for k, v in configs.items() if not v[2]}
    if args.configs:
        unknown = set(args.configs) - set(configs) - {"auto"}
        if unknown:
            raise UserError(f"unknown configuration(s) {', '.join(sorted(unknown))} on {device.type}; "
                            f"choose from auto, {', '.join(configs)}")
        configs = {k: v for k, v in configs.items() if k == "plain" or k in args.configs}
    with_auto = not args.configs or "auto" in args.configs
    started = time.perf_counter()
    ceiling = matmul_ceiling(device, args.quick)
    print("matrix-product ceiling: " + ", ".join(f"{k} {v:.3f} TFLOP/s" for k, v in ceiling.items()))
    results = []
    print(f"{'model':<14}{'config':<32}{'s/step':>9}{'img/s':>9}{'TFLOP/s':>9}{'of matmul':>10}{'speedup':>9}")
    for model_name in args.models:
        flops = count_flops(model_name, device)
        n = SHAPES[model_name][0]
        plain_seconds = None
        model_configs = dict(configs)
        selection = None
        if with_auto:
            model_configs["auto"], selection = auto_config(model_name, device)
        for config_name, config in model_configs.items():
            slow = model_name in ("unet_512", "smp_unet_512") and config == configs["plain"] and device.type == "cpu"
            warmup = 3 if config[2] else (1 if slow else 2)
            repeats = 3 if (args.quick or slow) else 7
            step = make_step(model_name, config, device)[0]
            seconds, times = time_steps(step, device, warmup, repeats)
            plain_seconds = plain_seconds or seconds
            dtype = str(config[0]).replace("torch.", "") if config[0] else "float32"
            tflops = flops / seconds / 1e12
            record = {"model": model_name, "config": config_name, "batch_size": n,
                      "image_size": SHAPES[model_name][1],
                      "autocast": str(config[0]) if config[0] else None, "channels_last": config[1],
                      "compile": config[2], "seconds_per_step": seconds, "all_times": times,
                      "images_per_second": n / seconds, "flops_per_step": flops,
                      "tflops": tflops, "speedup": plain_seconds / seconds,
                      "fraction_of_matmul": tflops / ceiling[dtype] if dtype in ceiling else None}
            if config_name == "auto":
                record["selection"] = selection
            results.append(record)
            fraction = f"{record['fraction_of_matmul']:.2f}" if record["fraction_of_matmul"] is not None else "n/a"
            print(f"{model_name:<14}{config_name:<32}{seconds:>9.4f}{n / seconds:>9.1f}"
                  f"{tflops:>9.3f}{fraction:>10}{record['speedup']:>8.2f}x", flush=True)
            del step
    write_json(args.out, {
        # the ISA limits that make one machine stand in for another are part of the command
        "command": " ".join([*(f"{k}={os.environ[k]}" for k in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")
                               if os.environ.get(k)),
                             "python -m tools.bench", *(__import__("sys").argv[1:] if argv is None else argv)]),
        "device": str(device), "machine": machine_info(device),
        "versions": library_versions("segmentation_models_pytorch"),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "seconds": time.perf_counter() - started, "matmul_tflops": ceiling,
        "matmul_size": 8192 if device.type == "cuda" else 4096, "results": results,
    })


if __name__ == "__main__":
    run_cli(main)
