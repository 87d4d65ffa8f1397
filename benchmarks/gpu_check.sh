#!/usr/bin/env bash
# Run the benchmarks on this machine's GPU (no network needed) and print the results table.
#
#   bash benchmarks/gpu_check.sh            # everything (a few minutes on one GPU)
#   bash benchmarks/gpu_check.sh --quick    # smoke run
#   bash benchmarks/gpu_check.sh --only sweep --only train
#
# Assumes jax[cuda] (and the project's dependencies) are installed for $PYTHON (default
# python3); the project itself is used from this checkout's src/. Results go to
# benchmarks/results_gpu.{json,md} unless --out PREFIX is given.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
export JAX_PLATFORMS=cuda
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

"$PYTHON" - <<'PY'
import sys
try:
    import jax
    devices = jax.devices()
except Exception as err:  # noqa: BLE001
    sys.exit(f"gpu_check: no CUDA device visible to JAX ({type(err).__name__}: {err}); "
             "is jax[cuda] installed and a GPU present?")
print(f"gpu_check: JAX {jax.__version__}, {len(devices)} device(s): {[d.device_kind for d in devices]}")
if len(devices) > 1:
    print("gpu_check: the benchmarks time one device; sharding is covered by tests/test_parallel.py")
PY

out=benchmarks/results_gpu
for arg in "$@"; do [ "$arg" = "--out" ] && out=""; done
if [ -n "$out" ]; then set -- --out "$out" "$@"; fi
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader 2>/dev/null || true
exec "$PYTHON" benchmarks/run_all.py "$@"
