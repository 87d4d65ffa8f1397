"""Sweeps: S configurations as ONE vmapped program against a Python loop of single runs.

Configurations are seeds x learning rate x entropy weight x outcome-noise level (16 in all;
S = 1, 4, 16 take the first S). The vmapped sweep is
`jax.jit(jax.vmap(trainer.train_with_data, in_axes=(None, 0, 0)))`, compiled once per S.
It is compared with two loops over the same S configurations:

* the loop a user writes with the library's API: per configuration `make_train(config, data)`
  then `run_training(trainer, key, hparams)`, each configuration compiled once (a new trainer
  is a new program), timed end to end: `speedup` = loop wall time / (vmapped compile + run);
* the same user's loop with JAX's persistent compilation cache on (what `metarouter train`
  and the experiment scripts do): the first configuration compiles, the others trace and load
  its program from disk (the hyperparameters are traced, so the program is the same):
  `speedup_cached_loop`;
* the most favourable loop: one jitted single-configuration `train_with_data`, compiled once
  for all and called S times: `speedup_shared_compile` = (its compile + S x the median single
  run) / (vmapped compile + run).

Timings: compile (ahead of time) is measured separately; the vmapped run is the median of
`repeats` runs after a warm-up. MFU counts the FLOPs of the training steps and validations.

    python benchmarks/bench_sweep.py [--quick]
"""

from __future__ import annotations

import statistics
import tempfile
import time

import jax

from bench_train import check_countable, step_flops, validation_flops
from common import block_time, compile_timed, script_main, matmul_peak, median_time
from metarouter_jax.compile_cache import disable_compilation_cache, enable_compilation_cache
from metarouter_jax.config import TrainConfig
from metarouter_jax.sweep import sweep_hparams
from metarouter_jax.training import make_train, run_training

SMALL = TrainConfig(tasks_per_step=8, hidden=64, num_steps=200, chunk_steps=100)
GRID = {"learning_rate": [1e-3, 3e-3], "entropy_start": [0.05, 0.1], "outcome_noise": [0.1, 0.2]}
SEEDS = (0, 1)
SIZES = (1, 4, 16)


def configurations(size: int):
    """(keys [S], Hparams [S]): the first `size` of seeds x GRID, keyed as `run_sweep` keys them."""
    hparams, seeds = sweep_hparams(GRID, SEEDS)
    if size > len(seeds):
        raise ValueError(f"at most {len(seeds)} configurations, asked for {size}")
    keys = jax.vmap(lambda s: jax.random.fold_in(jax.random.key(s), 0))(seeds[:size])
    return keys, jax.tree.map(lambda x: x[:size], hparams)


def run(data, sizes=SIZES, config: TrainConfig = SMALL, repeats: int = 3, peak: float | None = None) -> dict:
    check_countable(config)
    peak = peak or matmul_peak()["flops_per_s"]
    trainer = make_train(config, data)
    args = trainer.data_args()
    keys, hparams = configurations(max(sizes))
    singles = [(keys[i], jax.tree.map(lambda x: x[i], hparams)) for i in range(max(sizes))]

    # FLOPs of one configuration's run: its meta-steps and its per-chunk validations.
    state = trainer.jit_init(keys[0], singles[0][1])
    step = step_flops(trainer, args, state, singles[0][1])
    valid_set = trainer.jit_validation_users(args, keys[0], singles[0][1])
    valid = validation_flops(trainer, args, state.params, valid_set)
    run_flops = config.num_steps * step + config.num_chunks * valid if step and valid else None

    single, seq_compile_s, _ = compile_timed(jax.jit(trainer.train_with_data), args, *singles[0])
    block_time(single, args, *singles[0])                                   # warm-up
    single_times = [block_time(single, args, key, hp)[0] for key, hp in singles]
    single_s = statistics.median(single_times)

    def user_loop():                       # a fresh trainer (and program) per configuration
        times = []
        for key, hp in singles:
            start = time.perf_counter()
            state, _ = run_training(make_train(config, data), key, hp)
            jax.block_until_ready(state.best_params)
            times.append(time.perf_counter() - start)
        return times

    loop_times = user_loop()               # each configuration compiled
    with tempfile.TemporaryDirectory() as folder:
        enable_compilation_cache(folder)   # an empty persistent cache: the first configuration fills it
        try:
            cached_times = user_loop()
        finally:
            disable_compilation_cache()

    rows = []
    for size in sizes:
        vmapped = jax.jit(jax.vmap(trainer.train_with_data, in_axes=(None, 0, 0)))
        batch = (keys[:size], jax.tree.map(lambda x: x[:size], hparams))
        compiled, compile_s, _ = compile_timed(vmapped, args, *batch)
        seconds, times = median_time(compiled, args, *batch, repeats=repeats)
        sequential_s = size * single_s
        rows.append({
            "configs": size, "vmapped_compile_s": compile_s, "vmapped_run_s": seconds, "vmapped_times_s": times,
            "sequential_compile_s": seq_compile_s, "sequential_run_s": sequential_s,
            "sequential_loop_s": sum(single_times[:size]), "user_loop_s": sum(loop_times[:size]),
            "cached_loop_s": sum(cached_times[:size]),
            "speedup": sum(loop_times[:size]) / (compile_s + seconds),
            "speedup_cached_loop": sum(cached_times[:size]) / (compile_s + seconds),
            "speedup_shared_compile": (seq_compile_s + sequential_s) / (compile_s + seconds),
            "speedup_without_compile": sequential_s / seconds,
            "mfu": size * run_flops / seconds / peak if run_flops else None,
            "configs_per_s": size / seconds,
        })
    largest = rows[-1]
    return {"speedup_small": largest["speedup"], "mfu_small": largest["mfu"], "configs": largest["configs"],
            "speedup_small_without_compile": largest["speedup_without_compile"],
            "speedup_small_shared_compile": largest["speedup_shared_compile"], "user_loop_times_s": loop_times,
            "speedup_small_cached_loop": largest["speedup_cached_loop"], "cached_loop_times_s": cached_times,
            "mfu_single": run_flops / single_s / peak if run_flops else None,
            "single_run_s": single_s, "single_times_s": single_times,
            "run_flops_per_config": run_flops, "step_flops": step, "validation_flops": valid,
            "config": {k: getattr(config, k) for k in ("tasks_per_step", "hidden", "num_steps", "chunk_steps")},
            "grid": {**GRID, "seed": list(SEEDS)}, "peak_flops_per_s": peak, "by_size": rows}


def main() -> None:
    script_main(__doc__, run, lambda data: run(data, (1, 4), SMALL.replace(num_steps=20, chunk_steps=10), repeats=1))


if __name__ == "__main__":
    main()
