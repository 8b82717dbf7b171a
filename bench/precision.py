"""Precision that fits the hardware: which device computes bf16 natively, and what ``--amp auto``
resolves to there.

bf16 autocast pays only where the hardware has bf16 arithmetic: a CUDA GPU that supports bf16 (Ampere and
later), or an x86 CPU with AVX512-BF16 or AMX-BF16. Elsewhere, for instance on an AVX2 CPU, PyTorch emulates
bf16 and a training step runs about ten times slower than in fp32 (``benchmarks/README.md``). So ``auto``
picks bf16 only on such devices, and an explicit ``bf16`` on a CPU without it warns in one line.

The CPU's flags come from ``/proc/cpuinfo``; every function takes them as an argument too, so that a test
can feed the flags of another CPU.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path

import torch

AMP_CHOICES = ("none", "bf16", "auto")
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
# The instruction sets that decide fp32 and bf16 speed, as /proc/cpuinfo names them -> as people write them.
ISA_NAMES = {"avx2": "AVX2", "avx512f": "AVX-512", "avx512_bf16": "AVX512-BF16", "amx_bf16": "AMX-BF16"}


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The flags of the first processor in ``cpuinfo`` (the text of ``/proc/cpuinfo``; read when None).
    Empty where there is no such file (not Linux)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return frozenset()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def cpu_name(cpuinfo: str | None = None) -> str:
    """``model name`` of the first processor, or ``unknown CPU``."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return "unknown CPU"
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            return value.strip()
    return "unknown CPU"


def native_bf16(device: torch.device | str, flags: Iterable[str] | None = None) -> bool:
    """True where ``device`` computes bf16 in hardware: a CUDA device that supports bf16, or a CPU whose
    ``flags`` (default: this machine's) include AVX512-BF16 or AMX-BF16."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type != "cpu":
        return False
    return bool(NATIVE_BF16_FLAGS & frozenset(cpu_flags() if flags is None else flags))


def resolve_amp(amp: str, device: torch.device | str, flags: Iterable[str] | None = None) -> str:
    """``none`` or ``bf16``: what a training run with ``--amp amp`` computes on ``device``. ``auto`` is bf16
    where the device computes it natively (:func:`native_bf16`), else fp32 (``none``). An explicit ``bf16`` on
    a CPU without native bf16 is kept, with a one-line warning on stderr."""
    if amp not in AMP_CHOICES:
        raise ValueError(f"amp must be one of {AMP_CHOICES}, got {amp!r}")
    device = torch.device(device)
    if amp == "auto":
        return "bf16" if native_bf16(device, flags) else "none"
    if amp == "bf16" and device.type == "cpu" and not native_bf16(device, flags):
        print("warning: --amp bf16 on a CPU without AVX512-BF16 or AMX: bf16 is emulated there and training "
              "will be several times slower than fp32; use --amp auto or none", file=sys.stderr)
    return amp


def describe_hardware(device: torch.device | str, cpuinfo: str | None = None) -> str:
    """One line: the GPU's name, or the CPU's name and which of the instruction sets in :data:`ISA_NAMES` it has."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"GPU {torch.cuda.get_device_name(device)}"
    flags = cpu_flags(cpuinfo)
    have = ", ".join(f"{name} {'yes' if flag in flags else 'no'}" for flag, name in ISA_NAMES.items())
    return f"CPU {cpu_name(cpuinfo)} ({have})"
