"""Meta-training throughput and model-FLOP utilisation (MFU) against the task batch size.

For each `tasks_per_step` T the jitted chunk `trainer.jit_chunk(data_args, state, hparams,
key)` (`chunk_steps` meta-steps in a lax.scan, then validation on held-out users) is
compiled ahead of time and timed; steps/s = chunk_steps / chunk time, nothing subtracted.

FLOPs: XLA's cost analysis counts a loop body once, so the compiled chunk's count is one
meta-step plus one validation. The validation's count (independent of T) is taken from its
own compiled program, the step's is the difference, and the chunk does
chunk_steps * step + validation FLOPs. `matmul_flops_per_task` counts the matmuls of one
task by hand as a sanity check (XLA also counts elementwise work, so expect a ratio >~ 1).

    python benchmarks/bench_train.py [--quick]
"""

from __future__ import annotations


import jax

from common import compile_timed, script_main, matmul_peak, median_time
from metarouter_jax.config import Hparams, TrainConfig
from metarouter_jax.networks import OUTCOME_DIM, TRADE_OFF_DIM
from metarouter_jax.training import make_train

BATCH_SIZES = (8, 16, 32, 64, 128)


def validation_flops(trainer, data_args, params, valid) -> float | None:
    """XLA FLOPs of one validation (adapt the fixed held-out users, route, score)."""
    def validate(args, params_, valid_):
        return trainer.bind(args).validation_score(params_, *valid_)

    return compile_timed(jax.jit(validate), data_args, params, valid)[2]


def step_flops(trainer, data_args, state, hparams) -> float | None:
    """XLA FLOPs of one meta-step, from its own compiled program (one compile)."""
    step = jax.jit(lambda args, state_, hparams_: trainer.bind(args).meta_step(state_, hparams_))
    return compile_timed(step, data_args, state, hparams)[2]


def matmul_flops_per_task(trainer) -> float:
    """Matmul FLOPs (2 m n k) of one task's forward pass x 3 (forward + backward), by hand.

    Contexts encoder over N contexts (and the G atoms' routing weights), the policy over B
    queries x K models (twice when the known-profile pathway trains jointly), the pairwise
    auxiliary loss (two utility-head passes per held-out context); inner refinement and
    vector-sized layers ignored.
    """
    cfg, net = trainer.config, trainer.net_config
    n, b, k = cfg.max_contexts, cfg.queries_per_task, trainer.arrays.observed.shape[1]
    d, q, h, e, dd = net.embed_dim, net.query_dim, net.hidden, net.encoder_dim, net.descriptor_dim
    contexts = cfg.latent_source == "contexts"
    policy_passes = 2 if contexts and cfg.profile_latent and cfg.joint_known and "policy" not in cfg.frozen else 1
    z, g = net.latent_dim, net.posterior_atoms
    policy = b * (d * q + q * h) + policy_passes * b * k * (dd * h + h * h + h * z)
    encoder = utility = 0
    if contexts:
        encoder_in = q + 2 * (dd + OUTCOME_DIM) + TRADE_OFF_DIM + net.num_families
        per_context = d * q + encoder_in * h + h * h
        if g:  # per-context atom log-likelihoods; every atom's routing weights
            encoder = n * (per_context + h * g) + g * (e * h + h * z + z * z)
        else:
            encoder = n * (per_context + h * (2 * e if net.gaussian else h)) + (h + 1) * h + h * e
        utility = 2 * n * (d * q + (q + dd + OUTCOME_DIM + e) * h + h)
    return 3.0 * 2.0 * (encoder + policy + utility)


def run(data, batch_sizes=BATCH_SIZES, chunk_steps: int = 50, repeats: int = 3, peak: float | None = None,
        base: TrainConfig | None = None) -> dict:
    """Throughput and MFU per task batch size; the headline is the default batch size's row."""
    base = base or TrainConfig()
    peak = peak or matmul_peak()["flops_per_s"]
    hparams = Hparams.create()
    key_init, key_valid = jax.random.split(jax.random.key(0))
    rows, valid = [], None
    for tasks in batch_sizes:
        config = base.replace(tasks_per_step=tasks, chunk_steps=chunk_steps, num_steps=20 * chunk_steps)
        trainer = make_train(config, data)
        state, args = trainer.jit_init(key_init, hparams), trainer.data_args()
        valid_set = trainer.jit_validation_users(args, key_valid, hparams)  # once per run, as in training
        chunk, compile_s, chunk_flops = compile_timed(trainer.jit_chunk, args, state, hparams, valid_set)
        if valid is None:
            valid = validation_flops(trainer, args, state.params, valid_set)
        seconds, times = median_time(chunk, args, state, hparams, valid_set, repeats=repeats)
        step = chunk_flops - valid if chunk_flops and valid else None
        flops = chunk_steps * step + valid if step else None
        rows.append({
            "tasks_per_step": tasks, "compile_s": compile_s, "chunk_s": seconds, "chunk_times_s": times,
            "steps_per_s": chunk_steps / seconds, "tasks_per_s": tasks * chunk_steps / seconds,
            "step_flops": step, "step_flops_by_hand": tasks * matmul_flops_per_task(trainer),
            "validation_flops": valid, "flops_per_s": flops / seconds if flops else None,
            "mfu": flops / seconds / peak if flops else None,
        })
    default = [r for r in rows if r["tasks_per_step"] == base.tasks_per_step] or rows[-1:]
    head = default[0]
    return {"mfu": head["mfu"], "tasks_per_s": head["tasks_per_s"], "steps_per_s": head["steps_per_s"],
            "compile_s": head["compile_s"], "tasks_per_step": head["tasks_per_step"],
            "best_mfu": max((r["mfu"] or 0.0) for r in rows), "chunk_steps": chunk_steps,
            "config": {k: v for k, v in base.to_dict().items()
                       if k in ("hidden", "latent_dim", "query_dim", "max_contexts", "queries_per_task",
                                "valid_users", "inner_steps")},
            "peak_flops_per_s": peak, "by_batch_size": rows}


def main() -> None:
    script_main(__doc__, run, lambda data: run(data, (8, 32), chunk_steps=10, repeats=2))


if __name__ == "__main__":
    main()
