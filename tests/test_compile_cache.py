"""The persistent compilation cache: where it lives, switching it off, and a second process that
loads what the first compiled (with bit-identical results)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import child_env, use_session_cache

from metarouter_jax import compile_cache
from metarouter_jax.cli import build_parser

REPO = Path(__file__).resolve().parents[1]

# A child process: cache in argv[1] (or the environment's choice when "-"), a small training run
# (or, with argv[2] == "sum", one small jitted sum), then the cache events JAX recorded and a
# digest of the result, as JSON.
CHILD = """
import hashlib, json, sys
import jax, numpy as np
import metarouter_jax as mr

events = {"hits": 0, "misses": 0}
def count(event, **kwargs):
    if event == "/jax/compilation_cache/cache_hits": events["hits"] += 1
    if event == "/jax/compilation_cache/cache_misses": events["misses"] += 1
jax.monitoring.register_event_listener(count)
folder = mr.enable_compilation_cache(None if sys.argv[1] == "-" else sys.argv[1], min_compile_s=0)
if sys.argv[2] == "sum":
    result = [jax.jit(lambda x: (x * x).sum())(np.arange(8.0))]
else:
    config = mr.TrainConfig(num_steps=4, chunk_steps=2, tasks_per_step=2, queries_per_task=4, max_contexts=4,
                            hidden=8, latent_dim=4, query_dim=4, valid_users=4, calib_queries=16)
    trainer = mr.make_train(config, mr.synthetic_data(seed=0, num_queries=200, embed_dim=8))
    result = jax.tree.leaves(mr.run_training(trainer, jax.random.key(0), mr.Hparams.create())[0].params)
digest = hashlib.sha256(b"".join(np.asarray(x).tobytes() for x in result)).hexdigest()
print(json.dumps({**events, "folder": str(folder) if folder else None, "digest": digest}))
"""


def cache_entries(directory) -> int:
    """Compiled programs in a cache folder (JAX writes each as `*-cache`)."""
    return sum(1 for _ in Path(directory).glob("*-cache"))


def run_child(cache: str, program: str = "train", **env) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, cache, program], capture_output=True, text=True, timeout=300,
                         env=child_env(**env), cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_second_process_loads_what_the_first_compiled(tmp_path):
    cache = tmp_path / "xla"
    first = run_child(str(cache))
    entries = cache_entries(cache)
    assert first["folder"] == str(cache) and first["misses"] > 0 and first["hits"] == 0 and entries > 0
    second = run_child(str(cache))
    assert second["hits"] >= entries and second["misses"] == 0
    assert cache_entries(cache) == entries
    assert second["digest"] == first["digest"]       # the executable loaded is the one compiled


def test_off_writes_nothing(tmp_path):
    off = run_child("-", "sum", METAROUTER_COMPILE_CACHE="off", JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax"))
    assert off["folder"] is None and off["hits"] == 0
    assert not (tmp_path / "jax").exists() or cache_entries(tmp_path / "jax") == 0


def test_where_the_cache_lives(monkeypatch, tmp_path):
    for name in (compile_cache.ENV, "JAX_COMPILATION_CACHE_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compile_cache.resolve_cache_dir() == tmp_path / "xdg" / "metarouter_jax" / "xla"
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "jax"))
    assert compile_cache.resolve_cache_dir() == tmp_path / "jax"
    monkeypatch.setenv(compile_cache.ENV, str(tmp_path / "ours"))
    assert compile_cache.resolve_cache_dir() == tmp_path / "ours"
    assert compile_cache.resolve_cache_dir(tmp_path / "given") == tmp_path / "given"
    for word in ("off", "0", "False", " no "):
        monkeypatch.setenv(compile_cache.ENV, word)
        assert compile_cache.resolve_cache_dir() is None


def test_unwritable_folder_warns_and_runs_without_cache(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    try:
        with pytest.warns(UserWarning, match="compilation cache off: cannot create"):
            assert compile_cache.enable_compilation_cache(blocker / "xla") is None
    finally:
        use_session_cache()


@pytest.mark.parametrize("argv", [["train"], ["eval", "runs/x/router"], ["route", "r", "--feedback", "f", "q"],
                                  ["sweep"], ["data", "info", "synthetic"]])
def test_every_command_takes_no_compile_cache(argv):
    parser = build_parser()
    assert parser.parse_args(argv).no_compile_cache is False
    assert parser.parse_args(argv + ["--no-compile-cache"]).no_compile_cache is True
