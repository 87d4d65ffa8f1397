"""Checkpoints with orbax-checkpoint.

Pytrees are stored as their flat list of leaves (PRNG keys as raw key data) and restored
against a template of the same structure, so a checkpoint from another configuration or a
damaged one is reported as such instead of loading garbage. Writes are atomic: orbax
commits a step only when it is complete, and a router directory is written beside its
final name and renamed into place.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp


# The layout of the saved parameters. Saved routers and training checkpoints carry it, and
# one of another layout is refused: shapes alone cannot tell a square kernel from its transpose.
# 2: policy scores linear in the routing weights, atomic-posterior encoder;
# 3: dense kernels stored [out, in] (`networks.Dense`).
FORMAT_VERSION = 3
FORMAT_FILE = "metarouter_format.json"  # beside a training checkpointer's steps


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete, corrupt or from a different configuration."""


def _to_storable(tree) -> dict[str, np.ndarray]:
    leaves = jax.tree.leaves(tree)
    out = {}
    for i, leaf in enumerate(leaves):
        if _is_key(leaf):
            leaf = jax.random.key_data(leaf)
        out[f"{i:05d}"] = np.asarray(leaf)
    return out


def _is_key(x) -> bool:
    return isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _from_storable(stored: dict[str, np.ndarray], template, source: str):
    leaves, treedef = jax.tree.flatten(template)
    if len(stored) != len(leaves):
        raise CheckpointError(f"{source}: holds {len(stored)} arrays, the model expects {len(leaves)} "
                              "(a checkpoint of a different configuration?)")
    restored = []
    for i, leaf in enumerate(leaves):
        value = np.asarray(stored[f"{i:05d}"])
        expect = jax.random.key_data(leaf) if _is_key(leaf) else np.asarray(leaf)
        if value.shape != expect.shape or value.dtype != expect.dtype:
            raise CheckpointError(f"{source}: array {i} is {value.dtype}{list(value.shape)}, expected "
                                  f"{expect.dtype}{list(expect.shape)} (a different configuration?)")
        restored.append(jax.random.wrap_key_data(value) if _is_key(leaf) else jnp.asarray(value))
    return jax.tree.unflatten(treedef, restored)


class TrainCheckpointer:
    """Save a training state every `every` steps, keep the last `keep`, resume the latest."""

    def __init__(self, directory: str | os.PathLike, every: int, keep: int = 3):
        self.directory = Path(directory).absolute()
        self.every = every
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def due(self, step: int) -> bool:
        return self.every > 0 and step % self.every == 0

    def _format_version(self):
        """The format version the directory's checkpoints were written in (None: no marker)."""
        path = self.directory / FORMAT_FILE
        try:
            return json.loads(path.read_text())["format_version"]
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as err:
            raise CheckpointError(f"{path} is corrupt: {err}") from err

    def _check_format(self):
        """Raise unless the directory's checkpoints are of this format; the marker's version (None:
        no marker, and no checkpoint yet)."""
        found = self._format_version()
        if found != FORMAT_VERSION and (found is not None or self.all_steps()):
            raise CheckpointError(
                f"{self.directory}: checkpoints of format version {found}, this metarouter_jax reads version "
                f"{FORMAT_VERSION} (written by another version: train again in a new directory)")
        return found

    def save(self, step: int, state) -> None:
        if self._check_format() is None:  # the first save in this directory
            tmp = self.directory / f".{FORMAT_FILE}.tmp"
            tmp.write_text(json.dumps({"format_version": FORMAT_VERSION}))
            os.replace(tmp, self.directory / FORMAT_FILE)
        self._manager.save(step, args=ocp.args.StandardSave(_to_storable(state)))
        self._manager.wait_until_finished()

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def restore(self, template, step: int | None = None):
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        self._check_format()
        source = f"checkpoint step {step} in {self.directory}"
        abstract = _to_storable(template)
        try:
            stored = self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
        except Exception as err:  # orbax raises many types for damaged files
            raise CheckpointError(f"{source} cannot be read (corrupt or incomplete): {err}") from err
        return _from_storable(stored, template, source)

    def close(self) -> None:
        self._manager.close()


def save_tree(path: str | os.PathLike, tree, metadata: dict) -> None:
    """Write `tree` and a JSON `metadata` to directory `path` atomically (tmp dir + rename)."""
    path = Path(path).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        with ocp.StandardCheckpointer() as ckpt:
            ckpt.save(tmp / "arrays", _to_storable(tree))
        (tmp / "router.json").write_text(json.dumps(metadata, indent=2))
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_metadata(path: str | os.PathLike) -> dict:
    path = Path(path)
    meta = path / "router.json"
    if not path.is_dir():
        raise CheckpointError(f"no saved router at {path} (not a directory)")
    if not meta.is_file():
        raise CheckpointError(f"{path} is not a saved router: router.json is missing")
    try:
        return json.loads(meta.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{meta} is corrupt: {err}") from err


def load_tree(path: str | os.PathLike, template):
    path = Path(path).absolute()
    source = f"router arrays in {path}"
    if not (path / "arrays").is_dir():
        raise CheckpointError(f"{source} are missing")
    try:
        with ocp.StandardCheckpointer() as ckpt:
            stored = ckpt.restore(path / "arrays", _to_storable(template))
    except Exception as err:
        raise CheckpointError(f"{source} cannot be read (corrupt or incomplete): {err}") from err
    return _from_storable(stored, template, source)
