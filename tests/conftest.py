"""Shared fixtures: tiny configs, a tiny trained router, the real-data folder."""

from __future__ import annotations

import os

# Tests run tiny programs whose time is mostly XLA compilation. Two flags each halve it and
# change no result beyond float tolerance: no backend optimisation passes, and XLA:CPU's older
# elemental emitter for fusions instead of its fusion emitters (a training chunk at the tiny
# config: 10.5 s to compile with the first flag alone, 5.1 s with both). Flags already in the
# environment come last and win; subprocesses started by tests inherit the result.
TEST_XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"
os.environ["XLA_FLAGS"] = f"{TEST_XLA_FLAGS} {os.environ.get('XLA_FLAGS', '')}".strip()
# The CLI keeps a persistent compilation cache in ~/.cache; tests run it in-process and must not
# write there (test_compile_cache.py checks the cache in temporary folders).
os.environ.setdefault("METAROUTER_COMPILE_CACHE", "off")
from pathlib import Path

import pytest

import metarouter_jax as mr

REPO = Path(__file__).resolve().parents[1]


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a test's subprocess: this process's (with the XLA_FLAGS above), this
    checkout's src/ first on PYTHONPATH, then `extra`."""
    path = os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, **extra}


def real_data_dir() -> Path:
    return Path(os.environ.get("METAROUTER_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = real_data_dir()
    if not path.is_dir():
        pytest.skip(f"real routing data not found at {path} (set METAROUTER_DATA)")
    return path


@pytest.fixture(scope="session")
def small_data():
    return mr.synthetic_data(seed=0, num_queries=1200, embed_dim=32)


TINY = mr.TrainConfig(num_steps=40, chunk_steps=20, tasks_per_step=8, queries_per_task=16, max_contexts=8,
                      hidden=32, latent_dim=8, query_dim=8, valid_users=16, calib_queries=64)


@pytest.fixture(scope="session")
def tiny_config():
    return TINY


@pytest.fixture(scope="session")
def trained_router(small_data):
    """A small router trained long enough to beat random clearly, with its two companions (40 s on
    2 cores, mostly compiling)."""
    config = TINY.replace(num_steps=600, chunk_steps=100, tasks_per_step=16)
    return mr.MetaRouter.fit(small_data, config, seed=0)
