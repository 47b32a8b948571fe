"""Facts about the machine a run is made on: the CPU's model and whether it has native
bf16, the GPU, the thread count and the library versions, recorded with every result."""
import os
import platform
import sys
from importlib import metadata
from pathlib import Path

import torch


def cpu_supports_bf16():
    """True where the CPU has native bf16 arithmetic (AVX512-BF16 or AMX): there bf16
    autocast is a large speed-up; elsewhere it is emulated and slower than fp32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


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


# a module's distribution, where its name differs (the version is read from the distribution)
DISTRIBUTIONS = {"sklearn": "scikit-learn"}


def library_versions(*names):
    """Python's version and each library's: an imported module's ``__version__``, else the
    installed distribution's, read without importing it (scikit-learn, timm and smp take
    seconds to import, and a run that does not use them should not pay it); None where
    missing."""
    versions = {"python": platform.python_version()}
    for name in ("torch", "torchvision", "numpy", *names):
        module = sys.modules.get(name)
        try:
            versions[name] = module.__version__ if module else metadata.version(DISTRIBUTIONS.get(name, name))
        except (AttributeError, metadata.PackageNotFoundError):  # a missing optional library is recorded, not fatal
            versions[name] = None
    return versions
