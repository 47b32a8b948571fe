"""How a run executes: the device, the autocast dtype and the memory format, as one
object, so that training and evaluation code asks it instead of threading three
arguments through every call. None of these settings changes what is computed beyond
the rounding of the chosen dtype; ``Execution.plain(device)`` is the template's."""
import contextlib
import os
import random
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from cli import UserError

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


def cpu_supports_bf16():
    """True where the CPU has native bf16 arithmetic (AVX512-BF16 or AMX): there bf16
    autocast is a large speed-up; elsewhere it is emulated and slower than fp32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


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
        would otherwise underflow; a no-op for bf16 and fp32."""
        return torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)

    def describe(self):
        return {"device": str(self.device), "autocast": str(self.amp_dtype).replace("torch.", "")
                if self.amp_dtype else None, "channels_last": self.channels_last}

    def __str__(self):
        d = self.describe()
        return f"{d['device']} (autocast: {d['autocast']}, channels_last: {d['channels_last']})"


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def default_num_workers():
    """Loader processes that leave one core for the training step."""
    return max(0, min(8, (os.cpu_count() or 1) - 1))
