"""Meta-training throughput and model-FLOP utilisation (MFU) against the task batch size.

For each `tasks_per_step` T the jitted chunk `trainer.jit_chunk(data_args, state, hparams,
key)` (`chunk_steps` meta-steps in a lax.scan, then validation on held-out users) is
compiled ahead of time and timed; steps/s = chunk_steps / chunk time, nothing subtracted.

FLOPs: XLA's cost analysis counts a loop body once, so the compiled chunk's count is one
meta-step plus one validation. The validation's count (independent of T) is taken from its
own compiled program, the step's is the difference, and the chunk does
chunk_steps * step + validation FLOPs. `matmul_flops_per_task` counts the matmuls of one
task by hand as a sanity check (XLA counts elementwise work too, and may count a dot differently:
expect the two within some 10%).

Where the MFU saturates: the same step at wider hidden layers (`WIDTHS`), next to a plain
reference step of the same size, a two-hidden-layer MLP trained with SGD on as many rows as the
policy's largest matmuls (tasks x queries x models), whole loop in one `lax.scan`: the MFU a
textbook step of these shapes reaches on this machine.

    python benchmarks/bench_train.py [--quick]
"""

from __future__ import annotations


import jax
import jax.numpy as jnp

from common import compile_timed, script_main, matmul_peak, median_time
from metarouter_jax.config import Hparams, TrainConfig
from metarouter_jax.networks import OUTCOME_DIM, TRADE_OFF_DIM
from metarouter_jax.training import make_train

BATCH_SIZES = (8, 16, 32, 64, 128)
WIDTHS = (64, 128, 256)


def check_countable(config: TrainConfig) -> None:
    """Refuse a config whose FLOPs XLA's cost analysis cannot count: with inner_steps > 1 the
    refinement (in every meta-step and every validation) is a lax.scan, whose body it counts once."""
    if config.inner_steps > 1:
        raise ValueError(f"inner_steps={config.inner_steps}: XLA's cost analysis counts the inner refinement's "
                         "scan body once, so the FLOPs (and the MFU) would miss all steps but one; "
                         "benchmark with inner_steps <= 1")


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
    """Matmul FLOPs (2 m n k) of one task, by hand: forward x 3 (forward + backward) for the
    trained parts, forward only for frozen ones (no backward pass through them).

    Contexts encoder over N contexts (the atoms' log-likelihood layer, or the mean-pooled head,
    once per user on the pooled features; the G atoms' routing weights), the policy's answer
    components over B queries x K models (once: the known-profile pathway reuses them), the
    pairwise auxiliary loss (two utility-head passes per held-out context); inner refinement and
    vector-sized products (components x routing weights) ignored.
    """
    cfg, net = trainer.config, trainer.net_config
    n, b, k = cfg.max_contexts, cfg.queries_per_task, trainer.arrays.observed.shape[1]
    d, q, h, e, dd = net.embed_dim, net.query_dim, net.hidden, net.encoder_dim, net.descriptor_dim
    contexts = cfg.latent_source == "contexts"
    z, g = net.latent_dim, net.posterior_atoms
    policy = b * (d * q + q * h) + b * k * (dd * h + h * h + h * z)
    encoder = utility = 0
    if contexts:
        encoder_in = q + 2 * (dd + OUTCOME_DIM) + TRADE_OFF_DIM + net.num_families
        per_context = d * q + encoder_in * h + h * h
        # the atom log-likelihoods (and the mean-pooled head) are applied once to the pooled features
        if g:  # atom log-likelihoods; every atom's routing weights
            encoder = n * per_context + h * g + g * (e * h + h * z + z * z)
        elif net.gaussian:
            encoder = n * (per_context + h * 2 * e)
        else:
            encoder = n * per_context + h * h + (h + 1) * h + h * e
        utility = 2 * n * (d * q + (q + dd + OUTCOME_DIM + e) * h + h)
    passes = lambda part: 1.0 if part in cfg.frozen else 3.0  # noqa: E731
    return 2.0 * (passes("encoder") * (encoder + utility) + passes("policy") * policy)


def plain_mlp(rows: int, hidden: int, peak: float, steps: int = 50, repeats: int = 3, out: int = 16) -> dict:
    """MFU of a textbook step of comparable size: a [rows, hidden] batch through two gelu layers of
    `hidden` and a linear [hidden, out] head, log-softmax loss, SGD, `steps` steps in one lax.scan.
    Weights are stored [out, in], as `networks.Dense` stores them."""
    keys = jax.random.split(jax.random.key(0), 5)
    x = jax.random.normal(keys[0], (rows, hidden))
    y = jax.nn.softmax(jax.random.normal(keys[1], (rows, out)))
    scale = hidden**-0.5
    params = {"w1": scale * jax.random.normal(keys[2], (hidden, hidden)), "b1": jnp.zeros(hidden),
              "w2": scale * jax.random.normal(keys[3], (hidden, hidden)), "b2": jnp.zeros(hidden),
              "w3": scale * jax.random.normal(keys[4], (out, hidden))}

    def loss(p):
        dense = lambda h, w: jnp.einsum("ri,oi->ro", h, w)  # noqa: E731
        h = jax.nn.gelu(dense(x, p["w1"]) + p["b1"])
        h = jax.nn.gelu(dense(h, p["w2"]) + p["b2"])
        return -jnp.mean(jnp.sum(y * jax.nn.log_softmax(dense(h, p["w3"])), -1))

    def train(p):
        def step(p, _):
            return jax.tree.map(lambda w, g: w - 1e-3 * g, p, jax.grad(loss)(p)), None
        return jax.lax.scan(step, p, None, length=steps)[0]

    compiled, compile_s, flops = compile_timed(jax.jit(train), params)
    seconds, _ = median_time(compiled, params, repeats=repeats)
    flops = steps * flops if flops else 3 * 2 * steps * rows * hidden * (2 * hidden + out)  # body counted once
    return {"hidden": hidden, "rows": rows, "flops_per_s": flops / seconds, "mfu": flops / seconds / peak,
            "compile_s": compile_s}


def run(data, batch_sizes=BATCH_SIZES, chunk_steps: int = 50, repeats: int = 3, peak: float | None = None,
        base: TrainConfig | None = None, widths=WIDTHS) -> dict:
    """Throughput and MFU per task batch size; the headline is the default batch size's row."""
    base = base or TrainConfig()
    check_countable(base)
    peak = peak or matmul_peak()["flops_per_s"]
    hparams = Hparams.create()
    key_init, key_valid = jax.random.split(jax.random.key(0))
    rows, valid = [], None
    for tasks, hidden in [(t, base.hidden) for t in batch_sizes] + [(base.tasks_per_step, w) for w in widths
                                                                    if w != base.hidden]:
        config = base.replace(tasks_per_step=tasks, chunk_steps=chunk_steps, num_steps=20 * chunk_steps, hidden=hidden)
        trainer = make_train(config, data)
        state, args = trainer.jit_init(key_init, hparams), trainer.data_args()
        valid_set = trainer.jit_validation_users(args, key_valid, hparams)  # once per run, as in training
        chunk, compile_s, chunk_flops = compile_timed(trainer.jit_chunk, args, state, hparams, valid_set)
        if valid is None or hidden != base.hidden:  # the validation's FLOPs depend on the width
            valid = validation_flops(trainer, args, state.params, valid_set)
        seconds, times = median_time(chunk, args, state, hparams, valid_set, repeats=repeats)
        step = chunk_flops - valid if chunk_flops and valid else None
        flops = chunk_steps * step + valid if step else None
        rows.append({
            "tasks_per_step": tasks, "hidden": hidden, "compile_s": compile_s, "chunk_s": seconds, "chunk_times_s": times,
            "steps_per_s": chunk_steps / seconds, "tasks_per_s": tasks * chunk_steps / seconds,
            "step_flops": step, "step_flops_by_hand": tasks * matmul_flops_per_task(trainer),
            "validation_flops": valid, "flops_per_s": flops / seconds if flops else None,
            "mfu": flops / seconds / peak if flops else None,
        })
    by_width = [r for r in rows if r["tasks_per_step"] == base.tasks_per_step]
    rows = [r for r in rows if r["hidden"] == base.hidden]
    default = [r for r in rows if r["tasks_per_step"] == base.tasks_per_step] or rows[-1:]
    head = default[0]
    policy_rows = base.tasks_per_step * base.queries_per_task * data.num_models
    plain = [plain_mlp(policy_rows, w, peak, repeats=repeats) | {"step_mfu": r["mfu"]}
             for w, r in sorted({r["hidden"]: r for r in by_width}.items())]
    return {"mfu": head["mfu"], "tasks_per_s": head["tasks_per_s"], "steps_per_s": head["steps_per_s"],
            "compile_s": head["compile_s"], "tasks_per_step": head["tasks_per_step"],
            "best_mfu": max((r["mfu"] or 0.0) for r in rows), "chunk_steps": chunk_steps,
            "plain_mlp_mfu": next(p["mfu"] for p in plain if p["hidden"] == base.hidden),
            "by_width": plain,
            "config": {k: v for k, v in base.to_dict().items()
                       if k in ("hidden", "latent_dim", "query_dim", "max_contexts", "queries_per_task",
                                "valid_users", "inner_steps")},
            "peak_flops_per_s": peak, "by_batch_size": rows}


def main() -> None:
    script_main(__doc__, run, lambda data: run(data, (8, 32), chunk_steps=10, repeats=2, widths=(64,)))


if __name__ == "__main__":
    main()
