"""Flax NNX port of the all-MiniLM-L6-v2 BERT encoder plus masked mean pooling.

The module mirrors Hugging Face ``BertModel`` (post-LayerNorm, absolute position
embeddings, exact erf GELU) without the pooler, which sentence-transformers does not use.
Weights come from the upstream ``model.safetensors`` as numpy arrays; nothing here touches
torch or the network.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

# Full-precision float32 matmuls: on GPUs the default may drop to TF32, which would cost
# agreement with the stored reference vectors. On CPU this changes nothing.
_PRECISION = jax.lax.Precision.HIGHEST

# Additive attention bias for padded keys (the recipe the stored vectors were made with).
_MASK_BIAS = -1e9


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """The subset of the Hugging Face BERT ``config.json`` this encoder needs."""

    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12

    @classmethod
    def from_dict(cls, cfg: Mapping) -> BertConfig:
        """Build from a parsed ``config.json``; rejects architectures this port does not cover."""
        if cfg.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"unsupported hidden_act {cfg.get('hidden_act')!r}; expected 'gelu'")
        if cfg.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError("only absolute position embeddings are supported")
        names = [f.name for f in dataclasses.fields(cls)]
        return cls(**{k: cfg[k] for k in names if k in cfg})


def _linear(n_in: int, n_out: int, rngs: nnx.Rngs) -> nnx.Linear:
    return nnx.Linear(n_in, n_out, precision=_PRECISION, rngs=rngs)


def _layer_norm(n: int, eps: float, rngs: nnx.Rngs) -> nnx.LayerNorm:
    return nnx.LayerNorm(n, epsilon=eps, rngs=rngs)


class BertLayer(nnx.Module):
    """One post-LayerNorm transformer block: self-attention then a GELU feed-forward."""

    def __init__(self, cfg: BertConfig, *, rngs: nnx.Rngs):
        h, eps = cfg.hidden_size, cfg.layer_norm_eps
        self.num_heads = cfg.num_attention_heads
        self.query = _linear(h, h, rngs)
        self.key = _linear(h, h, rngs)
        self.value = _linear(h, h, rngs)
        self.attn_out = _linear(h, h, rngs)
        self.attn_norm = _layer_norm(h, eps, rngs)
        self.intermediate = _linear(h, cfg.intermediate_size, rngs)
        self.output = _linear(cfg.intermediate_size, h, rngs)
        self.out_norm = _layer_norm(h, eps, rngs)

    def __call__(self, x: jax.Array, bias: jax.Array) -> jax.Array:
        """x: [B, L, H] float32; bias: [B, 1, 1, L] additive key mask. Returns [B, L, H]."""
        b, n, h = x.shape
        d = h // self.num_heads

        def heads(t):  # [B, L, H] -> [B, heads, L, d]
            # Head-major layout first: XLA:CPU runs the batched matmuls ~2.5x faster this
            # way than with the transposes folded into the einsums.
            return t.reshape(b, n, self.num_heads, d).transpose(0, 2, 1, 3)

        q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        scores = jnp.einsum("bhqd,bhkd->bhqk", q, k, precision=_PRECISION) / math.sqrt(d)
        probs = jax.nn.softmax(scores + bias, axis=-1)
        ctx = jnp.einsum("bhqk,bhkd->bhqd", probs, v, precision=_PRECISION)
        ctx = ctx.transpose(0, 2, 1, 3).reshape(b, n, h)
        x = self.attn_norm(x + self.attn_out(ctx))
        ff = self.output(jax.nn.gelu(self.intermediate(x), approximate=False))
        return self.out_norm(x + ff)


class MiniLMEncoder(nnx.Module):
    """BERT encoder (no pooler) followed by masked mean pooling and L2 normalisation."""

    def __init__(self, cfg: BertConfig, *, rngs: nnx.Rngs):
        h = cfg.hidden_size
        self.word_embeddings = nnx.Embed(cfg.vocab_size, h, rngs=rngs)
        self.position_embeddings = nnx.Embed(cfg.max_position_embeddings, h, rngs=rngs)
        self.token_type_embeddings = nnx.Embed(cfg.type_vocab_size, h, rngs=rngs)
        self.embed_norm = _layer_norm(h, cfg.layer_norm_eps, rngs)
        self.layers = nnx.List([BertLayer(cfg, rngs=rngs) for _ in range(cfg.num_hidden_layers)])

    def __call__(self, input_ids: jax.Array, mask: jax.Array) -> jax.Array:
        """input_ids: [B, L] int32; mask: [B, L] (1 = real token, 0 = padding).

        Returns [B, H] float32 unit vectors. All-padding rows (batch filler) come out as
        zeros rather than NaN.
        """
        n = input_ids.shape[1]
        mask = mask.astype(jnp.float32)
        # token_type_ids are all 0, so the type embedding is one broadcast row.
        x = (
            self.word_embeddings(input_ids)
            + self.position_embeddings.embedding[...][:n][None]
            + self.token_type_embeddings.embedding[...][0]
        )
        x = self.embed_norm(x)
        bias = ((1.0 - mask) * _MASK_BIAS)[:, None, None, :]
        for layer in self.layers:
            x = layer(x, bias)
        summed = jnp.einsum("blh,bl->bh", x, mask, precision=_PRECISION)
        mean = summed / jnp.maximum(mask.sum(axis=1, keepdims=True), 1.0)
        # Same clamp as torch.nn.functional.normalize (what sentence-transformers applies).
        norm = jnp.linalg.norm(mean, axis=-1, keepdims=True)
        return mean / jnp.maximum(norm, 1e-12)


def _hf_to_nnx(tensors: Mapping[str, np.ndarray], cfg: BertConfig) -> dict[tuple, np.ndarray]:
    """Map Hugging Face BERT tensor names to NNX state paths (Linear kernels transposed)."""
    out: dict[tuple, np.ndarray] = {}

    def linear(dst: tuple, src: str) -> None:
        out[dst + ("kernel",)] = tensors[src + ".weight"].T  # torch keeps [out, in]
        out[dst + ("bias",)] = tensors[src + ".bias"]

    def norm(dst: tuple, src: str) -> None:
        out[dst + ("scale",)] = tensors[src + ".weight"]
        out[dst + ("bias",)] = tensors[src + ".bias"]

    for name in ("word", "position", "token_type"):
        out[(f"{name}_embeddings", "embedding")] = tensors[f"embeddings.{name}_embeddings.weight"]
    norm(("embed_norm",), "embeddings.LayerNorm")
    for i in range(cfg.num_hidden_layers):
        src, dst = f"encoder.layer.{i}.", ("layers", i)
        for part in ("query", "key", "value"):
            linear(dst + (part,), src + "attention.self." + part)
        linear(dst + ("attn_out",), src + "attention.output.dense")
        norm(dst + ("attn_norm",), src + "attention.output.LayerNorm")
        linear(dst + ("intermediate",), src + "intermediate.dense")
        linear(dst + ("output",), src + "output.dense")
        norm(dst + ("out_norm",), src + "output.LayerNorm")
    return out


def build_encoder(
    tensors: Mapping[str, np.ndarray], cfg: BertConfig
) -> tuple[nnx.GraphDef, nnx.State]:
    """Create the NNX module, fill it from HF-named numpy tensors and split it.

    Returns ``(graphdef, state)`` for :func:`encode`. Raises ``ValueError`` if a tensor is
    missing or has the wrong shape, so a corrupt or foreign checkpoint fails loudly.
    """
    # eval_shape: build the structure without spending time on random initialisation.
    abstract = nnx.eval_shape(lambda: MiniLMEncoder(cfg, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    flat = dict(nnx.to_flat_state(state))
    try:
        weights = _hf_to_nnx(tensors, cfg)
    except KeyError as e:
        raise ValueError(f"checkpoint lacks tensor {e.args[0]!r}") from None
    if set(weights) != set(flat):
        raise ValueError(f"parameter mismatch: {sorted(set(flat) ^ set(weights))[:5]}")
    for path, var in flat.items():
        arr = np.asarray(weights[path], dtype=np.float32)
        if arr.shape != var.shape:
            raise ValueError(f"{'.'.join(map(str, path))}: shape {arr.shape} != {var.shape}")
        var.set_value(jnp.asarray(arr))
    return graphdef, nnx.from_flat_state(flat)


@functools.partial(jax.jit, static_argnums=0)
def encode(graphdef: nnx.GraphDef, state: nnx.State, input_ids: jax.Array, mask: jax.Array):
    """Jitted forward: ids/mask [B, L] -> unit sentence vectors [B, H] float32.

    ``graphdef`` is static (hashable), so every embedder built from the same config shares
    one compilation per (B, L) shape.
    """
    return nnx.merge(graphdef, state)(input_ids, mask)
