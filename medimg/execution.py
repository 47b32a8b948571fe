"""How a run executes: the device, the autocast dtype and the memory format, as one
object, so that training and evaluation code asks it instead of threading three
arguments through every call. None of these settings changes what is computed beyond
the rounding of the chosen dtype; ``Execution.plain(device)`` is the template's."""
import contextlib
import json
import os
import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from medimg.cli import UserError
from medimg.machine import cpu_model, cpu_supports_bf16
from medimg.runfiles import write_json

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}


def pick_device(name="auto"):
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if mps else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu or auto")
    if name == "mps" and not mps:
        raise UserError("--device mps was asked for but Apple's MPS backend is not available; use --device cpu or auto")
    return torch.device(name)


def default_amp_dtype(device):
    """bf16 on a CPU with native bf16 and on CUDA GPUs that have it, fp16 on older GPUs,
    fp32 (None) elsewhere."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_supports_bf16():
        return torch.bfloat16
    return None


@dataclass(frozen=True)
class Execution:
    device: torch.device
    amp_dtype: Optional[torch.dtype] = None
    channels_last: bool = False

    @classmethod
    def plain(cls, device):
        """The template's execution: fp32, contiguous tensors."""
        return cls(torch.device(device))

    @classmethod
    def from_flags(cls, device, amp="auto", plain=False, channels_last=True):
        """``--plain`` wins; ``amp`` is 'auto' (``default_amp_dtype``), 'bf16', 'fp16' or 'off'."""
        if plain:
            return cls.plain(device)
        dtype = default_amp_dtype(device) if amp == "auto" else AMP_DTYPES[amp]
        return cls(device, dtype, channels_last and device.type != "mps")

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def to_input(self, x):
        """A batch moved to the device, in the memory format the model was prepared for."""
        x = x.to(self.device, non_blocking=True)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def prepare(self, model):
        model = model.to(self.device)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def grad_scaler(self):
        """Loss scaling for fp16 autocast (older GPUs without bf16), whose small gradients
        would otherwise underflow. For bf16 and fp32 on a GPU, a scaler fixed at 1 (powers of
        two scale exactly): its device-side finiteness check lets a fused optimizer skip a
        non-finite step without the host waiting (``training.training_step``). Disabled
        elsewhere: on a CPU reading the loss costs nothing."""
        if self.amp_dtype == torch.float16:
            return torch.amp.GradScaler(self.device.type)
        if self.device.type == "cuda":
            return torch.amp.GradScaler("cuda", init_scale=1.0, growth_interval=2 ** 30)
        return torch.amp.GradScaler(self.device.type, enabled=False)

    def optimizer_options(self):
        """Keyword arguments for the Adam family: on a GPU the fused kernels (one launch for
        every parameter, and the device-side skip of ``grad_scaler``)."""
        return {"fused": True} if self.device.type == "cuda" else {}

    def describe(self):
        return {"device": str(self.device), "autocast": str(self.amp_dtype).replace("torch.", "")
                if self.amp_dtype else None, "channels_last": self.channels_last}

    def __str__(self):
        d = self.describe()
        return f"{d['device']} (autocast: {d['autocast']}, channels_last: {d['channels_last']})"


# ----------------------------------------------------------------------------- chosen by measurement

def candidates(device, amp="auto", channels_last="auto"):
    """The executions that compute the same thing as the template's, by name: plain,
    channels_last, and the device's native autocast dtype with and without it (bf16 on a
    CPU only where it is native: emulated bf16 is about ten times slower). An explicit
    ``amp`` ('bf16', 'fp16', 'off') or ``channels_last`` ('on', 'off') keeps only the
    candidates that agree with it."""
    native = default_amp_dtype(device)
    dtypes = {None: "", native: {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(native, "")}
    if amp != "auto":
        dtypes = {AMP_DTYPES[amp]: amp if amp != "off" else ""}
    layouts = {"auto": (False, True), "on": (True,), "off": (False,)}[channels_last]
    if device.type == "mps":
        layouts = (False,)
    found = {}
    for dtype, prefix in dtypes.items():
        for layout in layouts:
            name = "_".join(part for part in (prefix, "channels_last" if layout else "") if part) or "plain"
            found[name] = Execution(device, dtype, layout)
    return found


def cache_file():
    """Where measured choices are remembered, so that later runs start at once."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "medimg-reference" / "execution.json"


def machine_key(device):
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()
    return f"{where} | {device.type} | torch {torch.__version__} | {torch.get_num_threads()} threads"


def time_steps(step, device, warmup=1, repeats=3):
    """``(median, all times)``: the wall times of ``repeats`` calls of ``step`` after ``warmup`` calls."""
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    for _ in range(warmup):
        step()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def choose(device, workload, make_step, amp="auto", channels_last="auto", timer=None, cache=None):
    """The fastest candidate execution for one workload (a string naming the model and
    its input shape), measured by timing a few training steps of each: ``make_step(execution)``
    returns a function that runs one step on a throwaway copy of the model. A candidate
    that fails is dropped; plain is kept unless another is measured faster. The choice
    and the timings are remembered per machine and workload in ``cache`` (a JSON file).
    Returns ``(execution, record)`` where the record says what was measured or reused."""
    timer = timer or (lambda step, device_: time_steps(step, device_)[0])  # seconds per step
    options = candidates(device, amp, channels_last)
    if len(options) == 1:
        (name, execution), = options.items()
        return execution, {"chosen": name, "how": "only candidate"}
    cache = Path(cache or cache_file())
    key = f"{machine_key(device)} | {workload} | {'/'.join(options)}"
    remembered = _read_cache(cache).get(key)
    if remembered and remembered["chosen"] in options:
        return options[remembered["chosen"]], {**remembered, "how": f"remembered in {cache}"}

    seconds, failures = {}, {}
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for name, execution in options.items():
            try:
                seconds[name] = timer(make_step(execution), device)
            except Exception as err:  # a kernel this machine lacks, an out-of-memory: not a candidate
                failures[name] = f"{err.__class__.__name__}: {str(err).splitlines()[0][:120] if str(err) else ''}"
    fastest = min(seconds, key=seconds.get) if seconds else None
    chosen = fastest if fastest is not None and (fastest == "plain" or "plain" not in seconds
                                                 or seconds[fastest] < seconds["plain"]) else "plain"
    record = {"chosen": chosen, "seconds_per_step": seconds, "failed": failures}
    _write_cache(cache, key, record)
    return options[chosen], {**record, "how": "measured"}


def from_args(args, device, workload, make_step):
    """The run's execution: the template's with ``--plain``, else the fastest measured
    candidate that agrees with ``--amp`` and ``--channels_last``."""
    if args.plain:
        return Execution.plain(device), {"chosen": "plain", "how": "--plain"}
    return choose(device, workload, make_step, args.amp, args.channels_last)


def _read_cache(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def _write_cache(path, key, record):
    try:
        write_json(path, {**_read_cache(path), key: record})
    except OSError:  # a read-only home: measure again next time, never fail a run for it
        pass


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def default_num_workers():
    """Loader processes that leave one core for the training step."""
    return max(0, min(8, (os.cpu_count() or 1) - 1))
