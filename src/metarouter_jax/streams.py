"""The random streams of one seed, in one table.

Every random draw a `seed` makes comes from `seed_key(seed, name)` =
`fold_in(key(seed), STREAMS[name])`, so no two uses share a stream: `MetaRouter.fit(seed=s)`
trains each of its routers from its own stream, and `evaluate(seed=s)` draws its test users from
another. (A plain `split(key(s), n)` would not do: its i-th key is `fold_in(key(s), i)`, the
stream of router number i.) A new use of a seed takes a new index here.
"""

from __future__ import annotations

import jax

STREAMS = {"metarouter": 0, "known": 1, "agnostic": 2, "test_users": 1000, "reference_mlp": 1001}


def seed_key(seed, name: str) -> jax.Array:
    """The key of stream `name` of `seed` (an int, or a traced integer under vmap)."""
    if name not in STREAMS:
        raise ValueError(f"unknown random stream {name!r}; known: {sorted(STREAMS)}")
    return jax.random.fold_in(jax.random.key(seed), STREAMS[name])
