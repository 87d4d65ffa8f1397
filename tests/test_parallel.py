"""Several devices: task-sharded training and config-sharded sweeps equal their one-device runs.

The multi-device checks run this file as a script in a subprocess with 8 simulated CPU
devices (XLA_FLAGS must be set before JAX starts); the child prints its measurements as
JSON and the test asserts on them.
"""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import child_env

import metarouter_jax as mr
from metarouter_jax import sweep
from metarouter_jax.config import Hparams
from metarouter_jax.parallel import default_mesh, shard_configs, shard_tasks
from metarouter_jax.sweep import run_sweep
from metarouter_jax.training import make_train, run_training

DEVICES = 8
LR = 1e-3
CONFIG = mr.TrainConfig(num_steps=10, chunk_steps=5, tasks_per_step=8, queries_per_task=8, max_contexts=4,
                        hidden=16, latent_dim=4, query_dim=4, valid_users=8, calib_queries=32)


def _diffs(a, b) -> dict[str, float]:
    """Max |a - b| per parameter, by its path."""
    diffs = jax.tree.map(lambda x, y: float(np.abs(np.asarray(x) - np.asarray(y)).max()), a, b)
    return {jax.tree_util.keystr(path): d for path, d in jax.tree_util.tree_leaves_with_path(diffs)}


def _check_params(diffs: dict[str, float], steps: int):
    diffs = dict(diffs)
    assert max(diffs.values()) < 1e-5, diffs


def child() -> dict:
    """Runs with DEVICES simulated devices: sharded vs unsharded training and sweeps."""
    data = mr.synthetic_data(seed=0, num_queries=600, embed_dim=16)
    trainer = make_train(CONFIG, data)
    hparams = Hparams.create(learning_rate=LR)
    plain, plain_hist = run_training(trainer, jax.random.key(0), hparams)
    sharded_trainer = shard_tasks(trainer)
    sharded, sharded_hist = run_training(sharded_trainer, jax.random.key(0), hparams)
    valid = sharded_trainer.jit_validation_users(sharded_trainer.data_args(), jax.random.key(1), hparams)
    hlo = sharded_trainer.jit_chunk.lower(sharded_trainer.data_args(), sharded, hparams, valid).as_text()
    try:
        shard_tasks(make_train(CONFIG.replace(tasks_per_step=12), data))
        task_error = ""
    except ValueError as err:
        task_error = str(err)

    # The sweep's sharding is independent of the network: the smaller program compiles faster.
    config, grid, seeds = CONFIG.replace(latent_source="none"), {"learning_rate": [LR, 2 * LR]}, [0, 1, 2]
    one = run_sweep(data, config, grid, seeds)                    # 6 configurations, padded to 8 below
    placed, real_shard_configs = set(), sweep.shard_configs

    def spy(tree, mesh):  # how the sweep's stacked states, hparams and validation users are placed
        out = real_shard_configs(tree, mesh)
        arrays = [x for x in jax.tree.leaves(out) if not jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)]
        placed.update((len(x.sharding.device_set), x.shape[0] // x.addressable_shards[0].data.shape[0])
                      for x in arrays)
        return out

    sweep.shard_configs = spy
    try:
        many = run_sweep(data, config, grid, seeds, mesh=default_mesh("configs"))
    finally:
        sweep.shard_configs = real_shard_configs
    return {
        "devices": jax.device_count(),
        "train_params_diff": _diffs(plain.params, sharded.params),
        "train_traces": sharded_trainer.trace_counter[0],
        "train_history_diff": max(float(np.abs(plain_hist[k] - sharded_hist[k]).max()) for k in plain_hist),
        "train_param_devices": len(jax.tree.leaves(sharded.params)[0].sharding.device_set),
        "train_task_constraint": '[{"tasks"}' in hlo,
        "task_error": task_error,
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
    assert multi_device["devices"] == DEVICES
    assert multi_device["train_param_devices"] == DEVICES      # replicated on every device
    assert multi_device["train_traces"] == 1                     # two chunks, one compile
    assert multi_device["train_task_constraint"]                # the task keys are split over the mesh
    assert multi_device["train_history_diff"] < 1e-4
    _check_params(multi_device["train_params_diff"], CONFIG.num_steps)


def test_task_batch_must_divide_over_devices(multi_device):
    assert "tasks_per_step (12)" in multi_device["task_error"] and f"devices ({DEVICES})" in multi_device["task_error"]


def test_config_sharded_sweep_equals_one_device(multi_device):
    assert multi_device["sweep_size"] == [6, 6]                 # padding removed again
    assert multi_device["sweep_placement"] == [[DEVICES, DEVICES]]  # every stacked leaf split 8 ways
    assert multi_device["sweep_history_diff"] < 1e-4
    _check_params(multi_device["sweep_params_diff"], CONFIG.num_steps)
    assert multi_device["sweep_best"][0] == multi_device["sweep_best"][1]


def test_one_device_is_a_no_op(small_data, tiny_config):
    if jax.device_count() != 1:
        pytest.skip("this process sees several devices")
    trainer = make_train(tiny_config, small_data)
    assert shard_tasks(trainer) is trainer
    mesh = default_mesh("configs")
    assert mesh.shape == {"configs": 1}
    tree = {"a": np.zeros((3, 2))}
    assert shard_configs(tree, mesh) is tree and shard_configs(tree, None) is tree


if __name__ == "__main__":
    print(json.dumps(child()))
