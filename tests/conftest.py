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
import shutil
import tempfile
from pathlib import Path

from filelock import FileLock

# One private temporary folder per test session, shared by the xdist workers and the tests'
# subprocesses: the first process (the xdist controller, or the only one with `-n 0`) creates it
# and removes it at the end; the others inherit it through the environment. It holds
#  - a persistent compilation cache: a program that several test files, workers or subprocesses
#    compile alike (the sweep child's single run, the training chunks test files share) is
#    compiled once and loaded after. Loaded executables are the compiled ones, so results are
#    bit-identical (test_compile_cache.py). The CLI's default cache in ~/.cache is never written;
#  - the routers of session fixtures that more than one worker needs (`shared_router`).
# On a 2-core machine the two took the suite from 602 to 538 s (pytest -n auto, two workers; fresh-clone
# CI: 635 s at 3dee859, 555 s at 48f1e8b).
SESSION_DIR = "METAROUTER_TEST_SESSION_DIR"
if SESSION_DIR not in os.environ:
    os.environ[SESSION_DIR] = tempfile.mkdtemp(prefix="metarouter-tests-")
    os.environ[f"{SESSION_DIR}_OWNER"] = str(os.getpid())
os.environ["METAROUTER_COMPILE_CACHE"] = str(Path(os.environ[SESSION_DIR]) / "xla")

import pytest

import metarouter_jax as mr

REPO = Path(__file__).resolve().parents[1]


def use_session_cache() -> None:
    """Compile through the session's cache (programs that compile in under 0.5 s are not stored)."""
    mr.enable_compilation_cache(min_compile_s=0.5)


use_session_cache()


def pytest_unconfigure(config):
    if os.environ.get(f"{SESSION_DIR}_OWNER") == str(os.getpid()):      # the process that created it
        shutil.rmtree(os.environ[SESSION_DIR], ignore_errors=True)


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


def shared_router(name: str, fit) -> mr.MetaRouter:
    """The router `fit()` returns, trained once per test session: the first process to ask trains
    and saves it in the session folder, the others (xdist workers) wait for that and load it."""
    path = Path(os.environ[SESSION_DIR]) / "routers" / name
    path.parent.mkdir(exist_ok=True)
    with FileLock(f"{path}.lock"):
        if not path.exists():
            fit().save(path)
        return mr.MetaRouter.load(path)


@pytest.fixture(scope="session")
def trained_router(small_data):
    """A small router trained long enough to beat random clearly, with its two companions (35-50 s
    on 2 cores, mostly compiling and running 600 unoptimised steps; a second worker loads it)."""
    config = TINY.replace(num_steps=600, chunk_steps=100, tasks_per_step=16)
    return shared_router("trained_router", lambda: mr.MetaRouter.fit(small_data, config, seed=0))
