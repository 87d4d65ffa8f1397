"""Shared pieces of the benchmarks: timing, the machine's matmul peak, FLOP counts, environment.

Every timing is the median of `repeats` runs after a warm-up run, each ended by
`jax.block_until_ready`; compile time is measured separately (ahead-of-time `lower().compile()`).
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import sys
import time

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

try:  # run from a checkout without installing: use its src/
    import metarouter_jax  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from metarouter_jax.compile_cache import disable_compilation_cache  # noqa: E402
from metarouter_jax.machine import cpu_info  # noqa: E402

# Benchmarks time compilation: nothing may come from a persistent cache (JAX_COMPILATION_CACHE_DIR).
disable_compilation_cache()


def load_bench_data(name: str = "synthetic"):
    """The benchmark data: `synthetic_data(seed=0)` (4000 queries, 64-d) or a named dataset."""
    import metarouter_jax as mr

    return mr.synthetic_data(seed=0) if name == "synthetic" else mr.load_dataset(name)


def block_time(fn, *args) -> tuple[float, object]:
    """(seconds, result) of fn(*args), waiting for the device."""
    start = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return time.perf_counter() - start, out


def median_time(fn, *args, repeats: int = 3, warmup: int = 1) -> tuple[float, list[float]]:
    """(median seconds, all timed seconds) of fn(*args) over `repeats` runs after `warmup` runs."""
    for _ in range(warmup):
        block_time(fn, *args)
    times = [block_time(fn, *args)[0] for _ in range(repeats)]
    return statistics.median(times), times


def compile_timed(jitted, *args):
    """(compiled executable, compile seconds incl. tracing and lowering, XLA flops or None)."""
    start = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    return compiled, time.perf_counter() - start, xla_flops(compiled)


def xla_flops(compiled) -> float | None:
    """FLOPs XLA's cost analysis gives a compiled program (loop bodies are counted ONCE)."""
    try:
        analysis = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 - some backends have none
        return None
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else {}
    flops = (analysis or {}).get("flops")
    return float(flops) if flops and flops > 0 else None


def matmul_peak(n: int | None = None, repeats: int = 10) -> dict:
    """The machine's measured float32 matmul rate: a jitted [n, n] @ [n, n], median of runs.

    n defaults to 2048 on CPU and 8192 on accelerators (where a 2048 matmul is too short
    to time against the dispatch overhead). Default matmul precision: on recent NVIDIA GPUs
    that is TF32, the same precision the training step's matmuls run at.
    """
    n = n or (2048 if jax.default_backend() == "cpu" else 8192)
    key_a, key_b = jax.random.split(jax.random.key(0))
    a = jax.random.normal(key_a, (n, n), jnp.float32)
    b = jax.random.normal(key_b, (n, n), jnp.float32)
    matmul = jax.jit(jnp.matmul)
    compiled, compile_s, _ = compile_timed(matmul, a, b)
    median, times = median_time(compiled, a, b, repeats=repeats, warmup=2)
    return {"flops_per_s": 2.0 * n**3 / median, "n": n, "median_s": median, "best_s": min(times),
            "compile_s": compile_s}


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB; Linux reports KiB, macOS bytes)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024.0 * 1024.0) if sys.platform == "darwin" else rss / 1024.0


def device_peak_mb() -> float | None:
    """Peak memory in use on the first device so far (MB), where its backend counts it (GPU, TPU);
    None on the CPU, whose arrays live in the process's resident memory (`peak_rss_mb`)."""
    import jax

    stats = jax.local_devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    return None if peak is None else peak / (1024.0 * 1024.0)


def env_info() -> dict:
    import flax
    import optax

    devices = jax.devices()
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    return {
        "jax": jax.__version__,
        "jaxlib": getattr(jax.lib, "__version__", None) or _version("jaxlib"),
        "flax": flax.__version__,
        "optax": optax.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "backend": jax.default_backend(),
        "devices": [str(d) for d in devices],
        "device_kind": devices[0].device_kind,
        "device_count": len(devices),
        "cpu_count": os.cpu_count(),
        "cpu": cpu_info(),
        "cpu_affinity": affinity,
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "compilation_cache": bool(jax.config.jax_enable_compilation_cache),
        "matmul_precision": str(jax.config.jax_default_matmul_precision),
        "time": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def script_main(doc: str, run, quick_run) -> None:
    """Command line of one benchmark script: `--quick` for a smoke run, `--data NAME`; prints JSON."""
    import argparse
    import json

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--data", default="synthetic")
    args = parser.parse_args()
    data = load_bench_data(args.data)
    print(json.dumps(quick_run(data) if args.quick else run(data), indent=2))
