"""Several devices: task-sharded training and config-sharded sweeps equal their one-device runs.

The multi-device checks run this file as a script in a subprocess with 8 simulated CPU
devices (XLA_FLAGS must be set before JAX starts); the child prints its measurements as
JSON and the test asserts on them.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import child_env

import metarouter_jax as mr
from metarouter_jax import router as router_module
from metarouter_jax import sweep
from metarouter_jax.config import Hparams
from metarouter_jax.parallel import TASK_AXIS, default_mesh, resolve_mesh, shard_configs, shard_tasks
from metarouter_jax.streams import seed_key
from metarouter_jax.sweep import run_sweep
from metarouter_jax.training import make_train, run_training

DEVICES = 8
LR = 1e-3
CONFIG = mr.TrainConfig(num_steps=10, chunk_steps=5, tasks_per_step=8, queries_per_task=8, max_contexts=4,
                        hidden=16, latent_dim=4, query_dim=4, valid_users=8, calib_queries=32,
                        joint_known=False)   # no warm start: MetaRouter.fit trains one router


def _diffs(a, b) -> dict[str, float]:
    """Max |a - b| per parameter, by its path."""
    diffs = jax.tree.map(lambda x, y: float(np.abs(np.asarray(x) - np.asarray(y)).max()), a, b)
    return {jax.tree_util.keystr(path): d for path, d in jax.tree_util.tree_leaves_with_path(diffs)}


def _check_params(diffs: dict[str, float]):
    diffs = dict(diffs)
    assert max(diffs.values()) < 1e-5, diffs


def child() -> dict:
    """Runs with DEVICES simulated devices: sharded vs unsharded training and sweeps."""
    data = mr.synthetic_data(seed=0, num_queries=600, embed_dim=16)
    # MetaRouter.fit splits the task batch by itself; the same run on one device, with fit's key.
    # Its router is the best chunk's parameters: at this rate the two chunks' scores are far apart.
    hparams = Hparams.create(learning_rate=30 * LR)
    key = seed_key(0, "metarouter")
    plain, plain_hist = run_training(make_train(router_module.router_config(CONFIG, "metarouter"), data), key, hparams)
    sharded_trainers, real_shard_tasks = [], router_module.shard_tasks

    def spy(trainer, mesh):
        sharded_trainers.append(real_shard_tasks(trainer, mesh))
        return sharded_trainers[-1]

    router_module.shard_tasks = spy
    ckpt_dir = tempfile.mkdtemp()
    try:
        fitted = mr.MetaRouter.fit(data, CONFIG, hparams, companions=False, checkpoint_dir=ckpt_dir, save_every=5)
        shutil.rmtree(Path(ckpt_dir) / "metarouter" / "10")   # resumed from step 5: its last chunk again
        resumed = mr.MetaRouter.fit(data, CONFIG, hparams, companions=False, checkpoint_dir=ckpt_dir, save_every=5)
    finally:
        router_module.shard_tasks = real_shard_tasks
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    sharded_trainer, resumed_trainer = sharded_trainers
    state = sharded_trainer.jit_init(key, hparams)
    valid = sharded_trainer.jit_validation_users(sharded_trainer.data_args(), jax.random.key(1), hparams)
    hlo = sharded_trainer.jit_chunk.lower(sharded_trainer.data_args(), state, hparams, valid).as_text()
    try:
        shard_tasks(make_train(CONFIG.replace(tasks_per_step=12), data))
        task_error = ""
    except ValueError as err:
        task_error = str(err)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        undivided = resolve_mesh("auto", TASK_AXIS, 12)

    # The sweep's sharding is independent of the network: the smaller program compiles faster.
    config, grid, seeds = CONFIG.replace(latent_source="none"), {"learning_rate": [LR, 2 * LR]}, [0, 1, 2]
    one = run_sweep(data, config, grid, seeds, mesh=None)         # 6 configurations, padded to 8 below
    placed, real_shard_configs = set(), sweep.shard_configs

    def spy(tree, mesh):  # how the sweep's stacked states, hparams and validation users are placed
        out = real_shard_configs(tree, mesh)
        arrays = [x for x in jax.tree.leaves(out) if not jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)]
        placed.update((len(x.sharding.device_set), x.shape[0] // x.addressable_shards[0].data.shape[0])
                      for x in arrays)
        return out

    sweep.shard_configs = spy
    try:
        many = run_sweep(data, config, grid, seeds)               # by default on every device
    finally:
        sweep.shard_configs = real_shard_configs
    fitted_hist = fitted.history["metarouter"]
    return {
        "devices": jax.device_count(),
        "fit_meshes": [len(t.task_sharding.device_set) for t in sharded_trainers],
        "train_params_diff": _diffs(plain.best_params, fitted.params["metarouter"]),
        "train_traces": sharded_trainer.trace_counter[0],
        "resumed_traces": resumed_trainer.trace_counter[0],
        "resumed_params_diff": _diffs(fitted.params["metarouter"], resumed.params["metarouter"]),
        "train_history_diff": max(float(np.abs(plain_hist[k] - fitted_hist[k]).max()) for k in plain_hist),
        "train_valid_gap": float(np.abs(np.diff(plain_hist["valid_utility"])).min()),
        "train_state_devices": len(jax.tree.leaves(state.params)[0].sharding.device_set),
        "fit_param_devices": sorted({len(x.sharding.device_set) for x in jax.tree.leaves(fitted.params)}),
        "train_task_constraint": '[{"tasks"}' in hlo,
        "task_error": task_error,
        "undivided_mesh": undivided is not None,
        "undivided_warnings": [str(w.message) for w in caught],
        "sweep_size": [one.size, many.size],
        "sweep_params_diff": _diffs(one.best_params, many.best_params),
        "sweep_history_diff": max(float(np.abs(one.history[k] - many.history[k]).max()) for k in one.history),
        "sweep_best": [one.best_index, many.best_index],
        "sweep_placement": sorted(placed),
    }


@pytest.fixture(scope="module")
def multi_device():
    env = child_env(XLA_FLAGS=f"{os.environ['XLA_FLAGS']} --xla_force_host_platform_device_count={DEVICES}",
                    JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_task_sharded_training_equals_one_device(multi_device):
    """`MetaRouter.fit` on 8 devices (by default) against `run_training` on one."""
    assert multi_device["devices"] == DEVICES
    assert multi_device["fit_meshes"] == [DEVICES, DEVICES]     # one router (trained, then resumed), split over every device
    assert multi_device["train_state_devices"] == DEVICES      # its state replicated on every device
    assert multi_device["fit_param_devices"] == [1]             # the router handed back on one device
    assert multi_device["train_traces"] == 1                     # two chunks, one compile
    # resumed from a checkpoint: the restored state placed as a fresh one, so its chunk compiles once too
    assert multi_device["resumed_traces"] == 1
    _check_params(multi_device["resumed_params_diff"])
    assert multi_device["train_task_constraint"]                # the task keys are split over the mesh
    assert multi_device["train_history_diff"] < 1e-4
    # the best chunk's parameters are compared: its choice must not hang on float noise
    assert multi_device["train_valid_gap"] > 1e-3
    _check_params(multi_device["train_params_diff"])


def test_task_batch_must_divide_over_devices(multi_device):
    assert "tasks_per_step (12)" in multi_device["task_error"] and f"devices ({DEVICES})" in multi_device["task_error"]
    # MetaRouter.fit's default falls back to one device, saying why
    assert not multi_device["undivided_mesh"]
    (warning,) = multi_device["undivided_warnings"]
    assert "tasks_per_step (12)" in warning and f"{DEVICES} devices" in warning


def test_config_sharded_sweep_equals_one_device(multi_device):
    assert multi_device["sweep_size"] == [6, 6]                 # padding removed again
    assert multi_device["sweep_placement"] == [[DEVICES, DEVICES]]  # every stacked leaf split 8 ways
    assert multi_device["sweep_history_diff"] < 1e-4
    _check_params(multi_device["sweep_params_diff"])
    assert multi_device["sweep_best"][0] == multi_device["sweep_best"][1]


def test_one_device_is_a_no_op(small_data, tiny_config):
    if jax.device_count() != 1:
        pytest.skip("this process sees several devices")
    trainer = make_train(tiny_config, small_data)
    assert shard_tasks(trainer) is trainer
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_mesh("auto", TASK_AXIS, 7) is None        # one device: no mesh, no warning
    mesh = default_mesh("configs")
    assert resolve_mesh(mesh, TASK_AXIS, 7) is mesh and resolve_mesh(None, TASK_AXIS) is None   # as given
    with pytest.raises(ValueError, match="mesh must be 'auto', a jax.sharding.Mesh or None, got 'all'"):
        resolve_mesh("all", TASK_AXIS)
    assert mesh.shape == {"configs": 1}
    tree = {"a": np.zeros((3, 2))}
    assert shard_configs(tree, mesh) is tree and shard_configs(tree, None) is tree


if __name__ == "__main__":
    print(json.dumps(child()))
