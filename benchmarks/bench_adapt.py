"""Adaptation: one user's adapt + route latency, and users adapted per second in a batch.

Uses the jitted pure functions of `metarouter_jax.adaptation` with the parameters of an
initialised (untrained) RouterNet at the default sizes: timing does not depend on training.
Contexts are real feedback shapes: random queries of the data and random model pairs, all
`contexts` slots valid. Both without and with inner refinement steps (`inner_steps`).
The same single-user call through the public API (`MetaRouter.adapt`, then `MetaRouter.route`
on a host array, with their input checks and transfers) is timed too, at the default
`inner_steps`: what an application that serves one request at a time sees.

    python benchmarks/bench_adapt.py [--quick]
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from common import block_time, compile_timed, script_main, median_time
from metarouter_jax import adaptation
from metarouter_jax.config import Hparams, TrainConfig
from metarouter_jax.contexts import Contexts
from metarouter_jax.networks import init_router_net
from metarouter_jax.router import DataInfo, MetaRouter
from metarouter_jax.training import make_train


def random_contexts(data, users: int, contexts: int, seed: int = 0) -> Contexts:
    """[users, contexts] feedback on random queries and random distinct model pairs."""
    rng = np.random.default_rng(seed)
    k = data.num_models
    query = rng.integers(0, data.num_queries, (users, contexts))
    model_a = rng.integers(0, k, (users, contexts))
    model_b = (model_a + rng.integers(1, k, (users, contexts))) % k
    return Contexts.from_feedback(data, query, model_a, model_b, rng.random((users, contexts)) < 0.5,
                                  capacity=contexts)


def run(data, users: int = 1024, contexts: int = 16, calls: int = 200, repeats: int = 20,
        inner_steps=(0, 3)) -> dict:
    trainer = make_train(TrainConfig(max_contexts=contexts), data)
    graphdef, params = init_router_net(trainer.net_config, jax.random.key(0))
    descriptors = trainer.arrays.descriptors
    batch = random_contexts(data, users, contexts)
    one = jax.tree.map(lambda x: x[0], batch)
    query = jnp.asarray(data.embeddings[:1])                                   # [1, D]
    allowed = jnp.ones((data.num_models,), bool)

    rows = []
    for steps in inner_steps:
        def adapt_batch(params_, contexts_, descriptors_, steps=steps):
            return jax.vmap(adaptation.adapt, in_axes=(None, None, 0, None, None, None, None))(
                graphdef, params_, contexts_, descriptors_, steps, False, trainer.atoms)  # [U, Z]

        def adapt_route(params_, contexts_, descriptors_, query_, allowed_, steps=steps):
            latent = adaptation.adapt(graphdef, params_, contexts_, descriptors_, steps, atoms=trainer.atoms)
            return jnp.argmax(adaptation.route_scores(graphdef, params_, query_, latent, descriptors_, allowed_), -1)

        compiled, compile_s, _ = compile_timed(jax.jit(adapt_batch), params, batch, descriptors)
        seconds, _ = median_time(compiled, params, batch, descriptors, repeats=repeats)
        single, single_compile_s, _ = compile_timed(jax.jit(adapt_route), params, one, descriptors, query, allowed)
        for _ in range(10):                                                     # warm-up
            block_time(single, params, one, descriptors, query, allowed)
        latencies = np.array([block_time(single, params, one, descriptors, query, allowed)[0] for _ in range(calls)])
        rows.append({
            "inner_steps": steps, "batch_ms": 1e3 * seconds, "users_per_s": users / seconds,
            "batch_compile_s": compile_s, "single_p50_ms": 1e3 * float(np.percentile(latencies, 50)),
            "single_p99_ms": 1e3 * float(np.percentile(latencies, 99)), "single_compile_s": single_compile_s,
        })
    api = api_latency(data, trainer, params, one, calls)
    head = rows[0]
    return {"batch_1024_ms" if users == 1024 else f"batch_{users}_ms": head["batch_ms"],
            "users_per_s": head["users_per_s"], "single_p50_ms": head["single_p50_ms"],
            "single_p99_ms": head["single_p99_ms"], "inner_steps": head["inner_steps"], "users": users,
            "contexts": contexts, "calls": calls, "by_inner_steps": rows, "api": api}


def api_latency(data, trainer, params, contexts: Contexts, calls: int) -> dict:
    """p50/p99 of `MetaRouter.adapt` + `MetaRouter.route` of one query, for one user."""
    info = DataInfo.from_data(data, trainer.arrays, trainer.config.train_split, trainer.atoms)
    router = MetaRouter(trainer.config, Hparams.create(), trainer.net_config, trainer.profiles, {"metarouter": params}, info)
    query = np.asarray(data.embeddings[:1])                                    # [1, D] on the host

    def call():
        return router.route(router.adapt(contexts), query)                     # numpy: synchronous

    for _ in range(10):                                                         # warm-up (compiles)
        call()
    latencies = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - start)
    return {"p50_ms": 1e3 * float(np.percentile(latencies, 50)),
            "p99_ms": 1e3 * float(np.percentile(latencies, 99)), "inner_steps": trainer.config.inner_steps}


def main() -> None:
    script_main(__doc__, run, lambda data: run(data, calls=50, repeats=5))


if __name__ == "__main__":
    main()
