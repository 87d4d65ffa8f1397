"""Routing throughput: queries per second from precomputed embeddings, and from raw text.

Embeddings: route `n_queries` queries for one latent with the jitted scorer
(`adaptation.route_scores`, vmapped over queries inside, then argmax), untrained parameters
at the default sizes. Text: `bench_text.run` (the MiniLM embedder; null when the optional
`text` extra or its weights are missing).

    python benchmarks/bench_route.py [--quick]
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np

from common import compile_timed, script_main, median_time
from metarouter_jax import adaptation
from metarouter_jax.config import TrainConfig
from metarouter_jax.networks import init_router_net
from metarouter_jax.training import make_train


def run_embeddings(data, n_queries: int = 100_000, repeats: int = 5) -> dict:
    trainer = make_train(TrainConfig(), data)
    graphdef, params = init_router_net(trainer.net_config, jax.random.key(0))
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(n_queries, data.embed_dim)).astype(np.float32)
    emb = jnp.asarray(emb / np.linalg.norm(emb, axis=1, keepdims=True))        # [Q, D] unit norm
    latent = jax.random.normal(jax.random.key(1), (trainer.net_config.latent_dim,))
    allowed = jnp.ones((data.num_models,), bool)

    def route(params_, query_emb, latent_, descriptors, allowed_):
        scores = adaptation.route_scores(graphdef, params_, query_emb, latent_, descriptors, allowed_)
        return jnp.argmax(scores, -1)                                          # [Q] model index

    operands = (params, emb, latent, trainer.arrays.descriptors, allowed)
    compiled, compile_s, flops = compile_timed(jax.jit(route), *operands)
    seconds, times = median_time(compiled, *operands, repeats=repeats)
    return {"qps": n_queries / seconds, "n_queries": n_queries, "median_s": seconds, "times_s": times,
            "compile_s": compile_s, "flops": flops}


def run_text(n_queries: int = 512, repeats: int = 3) -> dict:
    """bench_text.run, or {'qps': None, 'error': ...} when the text extra cannot load."""
    import bench_text

    try:
        return bench_text.run(n_queries=n_queries, repeats=repeats)
    except (ImportError, OSError) as err:  # extra or weights missing, weights not as published (WeightsError)
        return {"qps": None, "compile_s": None, "error": f"{type(err).__name__}: {err}"}


def run(data, n_queries: int = 100_000, text_queries: int = 512, repeats: int = 5, text_repeats: int = 3) -> dict:
    emb = run_embeddings(data, n_queries, repeats)
    text = run_text(text_queries, text_repeats)
    return {"qps_embeddings": emb["qps"], "qps_text": text["qps"], "embeddings": emb, "text": text}


def main() -> None:
    script_main(__doc__, run, lambda data: run(data, 10_000, 64, 2, 1))


if __name__ == "__main__":
    main()
