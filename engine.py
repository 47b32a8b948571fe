"""What the two training scripts share: device and speed settings, the run's record
(command, configuration, machine, versions, timings), crash-safe files, resumable
checkpoints, one-line errors and the training-curve figure.

No framework: each script keeps its own readable ``train``/``test`` loop and calls
these helpers."""
import contextlib
import datetime
import json
import os
import platform
import random
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


class UserError(Exception):
    """Bad input or environment, reported as one line (what, where, what to do)."""


def run_cli(main):
    """Run ``main()``; a ``UserError`` becomes one line on stderr and exit status 2."""
    try:
        main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2)
    except KeyboardInterrupt:
        print("interrupted: rerun the same command with --resume to continue", file=sys.stderr)
        raise SystemExit(130)


# ----------------------------------------------------------------------------- device and speed

def pick_device(name="auto"):
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu or auto")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError("--device mps was asked for but Apple's MPS backend is not available; use --device cpu or auto")
    return torch.device(name)


def cpu_supports_bf16():
    """True where the CPU has native bf16 arithmetic (AVX512-BF16 or AMX): there bf16
    autocast is a large speed-up; elsewhere it is emulated and slower than fp32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def autocast_dtype(device, amp="auto"):
    """The mixed-precision dtype for ``device``, or None for plain fp32.

    ``amp``: 'auto' (bf16 on a CPU with native bf16 and on CUDA GPUs that have it,
    fp16 on older GPUs, fp32 elsewhere), 'bf16', 'fp16' or 'off'."""
    if amp == "off":
        return None
    if amp == "bf16":
        return torch.bfloat16
    if amp == "fp16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_supports_bf16():
        return torch.bfloat16
    return None


def autocast(device, dtype):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(device, amp_dtype):
    """Loss scaling for fp16 autocast (older GPUs without bf16), whose small gradients
    would otherwise underflow; a no-op for bf16 and fp32."""
    return torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)


def to_memory_format(tensor, channels_last):
    if channels_last and tensor.dim() == 4:
        return tensor.contiguous(memory_format=torch.channels_last)
    return tensor


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def default_num_workers():
    """Loader processes that leave one core for the training step."""
    return max(0, min(8, (os.cpu_count() or 1) - 1))


# ----------------------------------------------------------------------------- the run's record

def cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device=None):
    info = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_bf16": cpu_supports_bf16(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    if device is not None:
        info["device"] = str(device)
    return info


def library_versions(*names):
    versions = {"python": platform.python_version()}
    for name in ("torch", "torchvision", "numpy", *names):
        try:
            versions[name] = __import__(name).__version__
        except Exception:  # a missing optional library is recorded, not fatal
            versions[name] = None
    return versions


def project_version():
    """The project's git commit (with '+changes' when the work tree differs), or None."""
    import subprocess
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True,
                                text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (commit + ("+changes" if dirty else "")) or None


def run_record(script, argv, args, device, *libraries):
    """Everything needed to reproduce and judge a run, stored in its results.json.
    ``argv``: the script's arguments (None: this process's command line)."""
    argv = sys.argv[1:] if argv is None else argv
    return {
        "command": shlex.join(["python", Path(script).name, *argv]),
        "config": {k: v for k, v in vars(args).items()},
        "machine": machine_info(device),
        "versions": library_versions(*libraries),
        "project_version": project_version(),
        "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


# ----------------------------------------------------------------------------- crash-safe files

def atomic_write(path, write):
    """Write through a temporary file in the same folder, then rename: a crash never
    leaves a half-written file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes files private; results are ordinary files
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path, obj):
    """Atomic JSON; NaN and infinities (which JSON lacks) are stored as null."""
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(_finite(obj), f, indent=2, allow_nan=False, default=_json_default)
            f.write("\n")
    atomic_write(path, write)


def _finite(obj):
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        return obj.tolist()
    if isinstance(obj, (Path, torch.device, torch.dtype)):
        return str(obj)
    raise TypeError(f"cannot store {type(obj).__name__} in JSON")


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: cannot read it as JSON ({err}); delete it or point to another file")


def prepare_logdir(logdir, resume):
    """Create ``logdir``; refuse to overwrite a finished run, and tell how to go on."""
    logdir = Path(logdir)
    if logdir.exists() and not logdir.is_dir():
        raise UserError(f"--logdir {logdir} is a file, not a folder; choose another path")
    results, checkpoint = logdir / "results.json", logdir / "checkpoint.pt"
    if not resume and (results.exists() or checkpoint.exists()):
        raise UserError(f"{logdir} already holds a run; pass --resume to continue it, "
                        f"or choose a new --logdir")
    logdir.mkdir(parents=True, exist_ok=True)
    return logdir


def finished(logdir):
    """A run whose results are written and that has nothing left to resume."""
    return (Path(logdir) / "results.json").exists() and not (Path(logdir) / "checkpoint.pt").exists()


def save_training_state(path, parts, shuffle_rng, **progress):
    """Checkpoint everything a resumed run needs to continue exactly: the state dicts of
    ``parts`` (model, optimizer, ...), the random streams, and ``progress`` (epoch, history)."""
    save_checkpoint(path, **{name: part.state_dict() for name, part in parts.items()}, rng=rng_state(),
                    shuffle_rng=shuffle_rng.get_state(), **progress)


def load_training_state(path, parts, shuffle_rng):
    """Restore what :func:`save_training_state` saved; returns the checkpoint (for its progress)."""
    state = load_checkpoint(path)
    for name, part in parts.items():
        if name in state:  # older checkpoints lack the scaler and scheduler
            part.load_state_dict(state[name])
    set_rng_state(state["rng"])
    shuffle_rng.set_state(state["shuffle_rng"])
    return state


def save_checkpoint(path, **state):
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path):
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise UserError(f"{path}: cannot load the checkpoint ({err}); delete it to start the run afresh")


def rng_state():
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state):
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


class Timer:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start


# ----------------------------------------------------------------------------- figures

def save_figure(fig, path, dpi=110, **savefig_kwargs):
    """Write a matplotlib figure as PNG, atomically, and free it."""
    import matplotlib.pyplot as plt
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png", **savefig_kwargs))
    plt.close(fig)


def plot_curves(history, path, title="", accuracy_label="accuracy", valid_epochs=None):
    """Loss and accuracy per epoch, train against validation, in one PNG.
    ``valid_epochs``: the (1-based) epochs at which validation ran, when not every one."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = np.arange(1, len(history["train_losses"]) + 1)
    valid_epochs = epochs if valid_epochs is None else valid_epochs
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, key, label in ((ax_loss, "losses", "loss"), (ax_acc, "accs", accuracy_label)):
        ax.plot(epochs, history[f"train_{key}"], "o-", ms=3, label="train")
        ax.plot(valid_epochs, history[f"valid_{key}"], "s-", ms=3, label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
