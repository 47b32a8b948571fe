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
from typing import Callable, Optional, Sequence

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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(step: Callable[[], object], device: torch.device) -> float:
    """Wall seconds of one call of ``step`` (on a GPU, until its kernels have finished)."""
    start = time.perf_counter()
    step()
    _sync(device)
    return time.perf_counter() - start


def time_steps(step: Callable[[], object], device: torch.device, warmup: int = 1,
               repeats: int = 3) -> tuple[float, list[float]]:
    """``(median, all times)``: the wall times of ``repeats`` calls of ``step`` after ``warmup`` calls."""
    for _ in range(warmup):
        step()
    _sync(device)
    times = [time_call(step, device) for _ in range(repeats)]
    return statistics.median(times), times


ROUNDS = 5  # timed calls of each candidate, taken in turn
MIN_MARGIN = 0.05  # a candidate replaces plain only when faster by more than this fraction (and the spread)


def spread(times: Sequence[float]) -> float:
    """How far one figure moves between rounds: the interquartile range over the median,
    ``(Q3 - Q1) / median``. Of five rounds that is the second-slowest less the second-fastest:
    the one round a passing load hit hardest, at either end, does not count."""
    if len(times) < 2:
        return 0.0
    q1, median, q3 = statistics.quantiles(times, n=4, method="inclusive")
    return (q3 - q1) / median


def measure_interleaved(steps: dict[str, Callable[[], object]], device: torch.device, rounds: int = ROUNDS,
                        warmup: int = 1, timer: Optional[Callable] = None
                        ) -> tuple[dict[str, list[float]], dict[str, str]]:
    """Seconds per call of every step, taken in turn (A B C A B C ...): ``rounds`` timed calls
    of each after ``warmup`` untimed ones, so that a load which comes and goes falls on every
    step alike instead of on whichever ran while it lasted. ``timer(step, device)`` times one
    call (``time_call``). A step that raises (a kernel this machine lacks, out of memory) is
    dropped. Returns ``(times, failures)``: name -> seconds of each round, name -> the error."""
    timer = timer or time_call
    live, failures = dict(steps), {}

    def attempt(name, call):
        try:
            return call()
        except Exception as err:  # not a candidate on this machine
            failures[name] = _error_line(err)
            live.pop(name)

    for name, step in list(live.items()):
        for _ in range(warmup):
            if name in live:
                attempt(name, step)
    _sync(device)
    times = {name: [] for name in live}
    for _ in range(rounds):
        for name, step in list(live.items()):
            seconds = attempt(name, lambda: timer(step, device))
            if name in live:
                times[name].append(seconds)
    return {name: t for name, t in times.items() if name in live}, failures


def decide(seconds: dict[str, float], spreads: dict[str, float]) -> tuple[str, float]:
    """``(chosen, margin)`` from each candidate's median seconds per step and spread: plain,
    unless a candidate is faster than plain by more than ``max(MIN_MARGIN, spread of plain,
    spread of the candidate)``; of those, the first in ``candidates`` order (the fewest
    departures from the template) that is as fast as the fastest within the same bound, so
    that two about equal winners do not trade places from one measurement to the next.
    ``margin`` is that bound for the chosen candidate: how far a later step time may differ
    before the choice is doubted (``recheck``)."""
    if "plain" not in seconds:  # plain failed: the fastest that ran, if any
        fastest = min(seconds, key=seconds.get, default="plain")
        return fastest, max(MIN_MARGIN, spreads.get(fastest, 0.0))

    def margin(name, against="plain"):
        return max(MIN_MARGIN, spreads[against], spreads[name])

    winners = [name for name in seconds if name != "plain" and seconds[name] < seconds["plain"] * (1 - margin(name))]
    fastest = min(winners, key=seconds.get, default="plain")
    chosen = next((name for name in winners if seconds[name] <= seconds[fastest] * (1 + margin(name, fastest))),
                  "plain")
    return chosen, margin(chosen)


def choose(device: torch.device, workload: str, make_step: Callable, amp: str = "auto",
           channels_last: str = "auto", timer: Optional[Callable] = None, cache: Optional[Path] = None,
           remeasure: bool = False, rounds: int = ROUNDS) -> tuple[Execution, dict]:
    """The fastest candidate execution for one workload (a string naming the model and its
    input shape), measured on a few training steps: ``make_step(execution)`` returns a
    function that runs one step on a throwaway copy of the model. The candidates are timed
    in turn, ``rounds`` times each (``measure_interleaved``), and compared by their medians;
    plain is kept unless another is faster by more than the measured spread (``decide``). A
    candidate that fails is dropped. The choice is remembered per machine and workload in
    ``cache`` (a JSON file) with each candidate's median, spread and the margin, and reused
    unless ``remeasure``. Returns ``(execution, record)`` where the record says what was
    measured or reused; pass it to ``recheck`` with the run's own step time."""
    options = candidates(device, amp, channels_last)
    if len(options) == 1:
        (name, execution), = options.items()
        return execution, {"chosen": name, "how": "only candidate"}
    cache = Path(cache or cache_file())
    key = f"{machine_key(device)} | {workload} | {'/'.join(options)}"
    where = {"key": key, "cache": str(cache)}  # for recheck
    remembered = _read_cache(cache).get(key)
    # a record without a margin predates interleaved measurement: measure it again
    if not remeasure and remembered and remembered["chosen"] in options and "margin" in remembered:
        return options[remembered["chosen"]], {**remembered, "how": f"remembered in {cache}", **where}

    failures = {}
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        steps = {}
        for name, execution in options.items():
            try:
                steps[name] = make_step(execution)
            except Exception as err:  # cannot even be set up here (a dtype the device lacks)
                failures[name] = _error_line(err)
        times, failed = measure_interleaved(steps, device, rounds, timer=timer)
        del steps  # every candidate's copy of the model is held until here
    failures.update(failed)
    seconds = {name: statistics.median(t) for name, t in times.items()}
    spreads = {name: spread(t) for name, t in times.items()}
    chosen, margin = decide(seconds, spreads)
    record = {"chosen": chosen, "seconds_per_step": seconds, "spread": spreads, "margin": margin,
              "rounds": rounds, "failed": failures}
    _write_cache(cache, key, record)
    return options[chosen], {**record, "how": "measured", **where}


def recheck(selection: dict, seconds_per_step: float, tolerance: float = 0.0) -> bool:
    """Doubt a choice by the run's own step time: when ``seconds_per_step`` (measured by the
    run, in its first epochs) differs from what the chosen execution was measured at by more
    than the choice's margin (or ``tolerance``, if larger: a training epoch also loads and
    augments its batches, which the measured step leaves out), the remembered choice is
    forgotten, so that the next run measures again; this run keeps its execution.
    ``selection`` is the record ``choose`` returned. Returns True when the choice was forgotten."""
    expected = (selection.get("seconds_per_step") or {}).get(selection.get("chosen"))
    if not expected or "key" not in selection or "margin" not in selection:
        return False  # --plain, an explicit flag, the only candidate: nothing was measured
    off, allowed = abs(seconds_per_step - expected) / expected, max(selection["margin"], tolerance)
    if off <= allowed:
        return False
    entries = _read_cache(selection["cache"])
    if entries.pop(selection["key"], None) is not None:
        try:
            write_json(selection["cache"], entries)
        except OSError:
            pass
    print(f"a training step took {seconds_per_step:.3g} s here against {expected:.3g} s when "
          f"{selection['chosen']} was chosen ({off:.0%} off, more than the {allowed:.0%} allowed): "
          f"the next run measures the candidates again")
    return True


def keep_for_resume(path: Path, execution: Execution, selection: dict) -> None:
    """Write the run's execution beside its checkpoint, so that a resumed run computes with
    it (``kept_for_resume``) whatever was measured or forgotten since: bit for bit."""
    write_json(path, {**execution.describe(), "selection": selection})


def kept_for_resume(path: Path, device: torch.device) -> Optional[tuple[Execution, dict]]:
    """The execution an interrupted run wrote with ``keep_for_resume``, or None."""
    if not path.exists():
        return None
    kept = json.loads(path.read_text())
    dtype = getattr(torch, kept["autocast"]) if kept["autocast"] else None
    return Execution(device, dtype, kept["channels_last"]), {**kept["selection"],
                                                             "how": f"kept from the interrupted run ({path.name})"}


def from_args(args, device, workload, make_step):
    """The run's execution: the template's with ``--plain``, else the fastest measured
    candidate that agrees with ``--amp`` and ``--channels_last``."""
    if args.plain:
        return Execution.plain(device), {"chosen": "plain", "how": "--plain"}
    return choose(device, workload, make_step, args.amp, args.channels_last)


def _error_line(err: Exception) -> str:
    return f"{err.__class__.__name__}: {str(err).splitlines()[0][:120] if str(err) else ''}"


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
