"""The CPU a result was computed on, for result files and benchmarks.

The same code and JAX version compute slightly different numbers on CPUs with other vector
instructions (XLA's CPU kernels are chosen per instruction set): reruns of the experiments on an
AVX-512 machine moved MetaRouter figures by up to 0.004 at some n, 0.001 at n = 6 (README,
"Averaging the parameters").
So provenance records the CPU model and the instruction-set extensions that pick those kernels.
"""

from __future__ import annotations

import platform
from pathlib import Path

# Extensions that change which vector kernels XLA's CPU backend and its matmul libraries run.
KERNEL_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
                "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8", "asimd", "sve", "sve2")


def cpu_info(cpuinfo: str | Path = "/proc/cpuinfo") -> dict:
    """{"model": the CPU's model name (None where unknown), "machine": e.g. x86_64, "flags": those
    of `KERNEL_FLAGS` it has, in that order (empty where /proc/cpuinfo cannot be read)}."""
    model, flags = None, set()
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "cpu model", "hardware") and model is None:
            model = value.strip() or None
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    return {"model": model or platform.processor() or None, "machine": platform.machine() or None,
            "flags": [f for f in KERNEL_FLAGS if f in flags]}
