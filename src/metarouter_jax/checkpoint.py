"""Checkpoints with orbax-checkpoint.

Pytrees are stored as their flat list of leaves (PRNG keys as raw key data) and restored
against a template of the same structure, so a checkpoint from another configuration or a
damaged one is reported as such instead of loading garbage. Writes are atomic: orbax
commits a step only when it is complete, and a router directory is written beside its
final name and renamed into place (a router already there is moved aside first and deleted
only once the new one is in place). A process killed mid-save leaves only temporary folders
(named after its host and process id), which the next save of the same router or training
directory removes; a router moved aside by a killed save is named when loading finds nothing
at its path. A training checkpoint directory records the run that wrote it
(`TrainCheckpointer.bind_run`) and refuses to resume another.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import socket
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from metarouter_jax.config import LEGACY_VALUES


# The layout of the saved parameters. Saved routers and training checkpoints carry it, and
# one of another layout is refused: shapes alone cannot tell a square kernel from its transpose.
# 2: policy scores linear in the routing weights, atomic-posterior encoder;
# 3: dense kernels stored [out, in] (`networks.Dense`).
FORMAT_VERSION = 3
FORMAT_FILE = "metarouter_format.json"  # beside a training checkpointer's steps
ROUTER_FILES = ("router.json", "arrays")   # what a saved router directory holds


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete, corrupt or from a different configuration."""


def host_leaves(tree) -> list[np.ndarray]:
    """The leaves of `tree` as NumPy arrays, PRNG keys as their raw key data: what a checkpoint
    stores, and what `training.run_fingerprint` digests."""
    return [np.asarray(jax.random.key_data(leaf) if _is_key(leaf) else leaf) for leaf in jax.tree.leaves(tree)]


def _to_storable(tree) -> dict[str, np.ndarray]:
    return {f"{i:05d}": leaf for i, leaf in enumerate(host_leaves(tree))}


def _brief(err: Exception, limit: int = 300) -> str:
    """An orbax/tensorstore error in a line or two: their messages embed the whole storage spec
    (kilobytes of JSON); the full text stays on the chained exception."""
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[:limit] + " ..."


def stored_digest(stored: dict[str, np.ndarray]) -> str:
    """sha256 of stored arrays (names, dtypes, shapes and bytes). Saves record it and loads check
    it: damaged array files can still read as arrays (flipped bits in a chunk), finite and of the
    right shapes, which nothing else would notice."""
    digest = hashlib.sha256()
    for name in sorted(stored):
        value = np.ascontiguousarray(stored[name])
        digest.update(f"{name}:{value.dtype.str}:{value.shape};".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def _check_digest(stored: dict[str, np.ndarray], expected: str | None, source: str, advice: str) -> None:
    """Raise unless `stored` has the digest its save recorded (None: saved before digests)."""
    if expected is not None and stored_digest({k: np.asarray(v) for k, v in stored.items()}) != expected:
        raise CheckpointError(f"{source} are damaged: their contents differ from what was saved (sha256 "
                              f"mismatch){advice}")


def _is_key(x) -> bool:
    return isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _from_storable(stored: dict[str, np.ndarray], template, source: str):
    leaves, treedef = jax.tree.flatten(template)
    if len(stored) != len(leaves):
        raise CheckpointError(f"{source}: holds {len(stored)} arrays, the model expects {len(leaves)} "
                              "(a checkpoint of a different configuration?)")
    if sorted(stored) != [f"{i:05d}" for i in range(len(leaves))]:
        raise CheckpointError(f"{source}: its arrays are named {sorted(stored)[:5]}..., not 00000-{len(leaves) - 1:05d} "
                              "(not written by metarouter_jax?)")
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
        # cleanup_tmp_directories: a step whose save was killed leaves an orbax temporary folder
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, cleanup_tmp_directories=True)
        self._manager = ocp.CheckpointManager(self.directory, options=options)
        self._run = None

    def due(self, step: int) -> bool:
        return self.every > 0 and step % self.every == 0

    def _marker(self) -> dict:
        """The directory's marker file ({} when there is none yet)."""
        path = self.directory / FORMAT_FILE
        if not path.exists():
            return {}
        marker = read_json_object(path)
        if "format_version" not in marker:
            raise CheckpointError(f"{path} is corrupt: no format_version")
        return marker

    def _check_format(self) -> dict:
        """Raise unless the directory's checkpoints are of this format; the marker ({}: no marker,
        and no checkpoint yet)."""
        marker = self._marker()
        found = marker.get("format_version")
        if found != FORMAT_VERSION and (found is not None or self.all_steps()):
            raise CheckpointError(
                f"{self.directory}: checkpoints of format version {found}, this metarouter_jax reads version "
                f"{FORMAT_VERSION} (written by another version: train again in a new directory)")
        return marker

    def bind_run(self, run: dict) -> None:
        """Tie the directory to one training run (`training.run_fingerprint`: its config,
        hyperparameters, PRNG key, data and starting parameters). Checkpoints that another run
        wrote are refused, since resuming them would mix two runs; the run is recorded with the
        first save."""
        run = json.loads(json.dumps(_finite_or_null(run)))  # as the marker stores it (tuples as lists, NaN as null)
        saved = self._check_format().get("run")
        if saved is not None and isinstance(saved.get("config"), dict):   # a run of before a field existed
            saved = {**saved, "config": {**LEGACY_VALUES, **saved["config"]}}     # trained with its old value
        if saved is not None and saved != run:
            raise CheckpointError(f"{self.directory}: its checkpoints belong to another training run "
                                  f"({_differences(saved, run)}): train in a new directory, or delete this one")
        self._run = run

    def save(self, step: int, state) -> None:
        marker = self._check_format()
        if not marker or (self._run is not None and "run" not in marker):  # the first save of this run
            marker = {"format_version": FORMAT_VERSION, **({"run": self._run} if self._run is not None else {})}
            write_json(self.directory / FORMAT_FILE, marker, indent=1)
        stored = _to_storable(state)
        self._manager.save(step, args=ocp.args.StandardSave(stored))
        self._manager.wait_until_finished()
        # Each kept step's digest, recorded once the step is complete (a step saved before
        # digests existed, or whose save was killed before this, is restored unchecked).
        kept = {str(s) for s in self.all_steps()}
        digests = {k: v for k, v in marker.get("digests", {}).items() if k in kept}
        write_json(self.directory / FORMAT_FILE, {**marker, "digests": {**digests, str(step): stored_digest(stored)}},
                   indent=1)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def restore(self, template, step: int | None = None):
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        marker = self._check_format()
        source = f"checkpoint step {step} in {self.directory}"
        advice = (f": delete {self.directory / str(step)} to resume from an earlier step, or train in a new "
                  "directory")
        try:  # restored as saved (no target): with one, orbax casts to its dtypes before we can compare
            stored = self._manager.restore(step, args=ocp.args.StandardRestore())
        except Exception as err:  # orbax raises many types for damaged files
            raise CheckpointError(f"{source} cannot be read (corrupt or incomplete{advice}): {_brief(err)}") from err
        _check_digest(stored, marker.get("digests", {}).get(str(step)), f"the arrays of {source}", advice)
        return _from_storable(stored, template, source)

    def close(self) -> None:
        self._manager.close()


_RUN_PARTS = {"key": "the PRNG key (seed)", "data": "the training data", "init_params": "the starting parameters"}


def _differences(saved: dict, now: dict, limit: int = 4) -> str:
    """What differs between two run fingerprints, e.g. "config.hidden: 16 saved, 8 now"."""
    found = []
    for part in sorted(set(saved) | set(now)):
        old, new = saved.get(part), now.get(part)
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            found += [f"{part}.{k}: {old.get(k)!r} saved, {new.get(k)!r} now"
                      for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
        else:
            found.append(f"{_RUN_PARTS.get(part, part)} differs")
    more = f"; {len(found) - limit} more" if len(found) > limit else ""
    return "; ".join(found[:limit]) + more


def _temp_dir(path: Path, kind: str) -> Path:
    """A new temporary folder beside `path` for a save in progress ("new": the router being
    written, "old": the router it replaces), named after this host and process so that a later
    save can tell the folders of a killed save from those of a running one."""
    return Path(tempfile.mkdtemp(prefix=f".{path.name}.{kind}.{socket.gethostname()}.{os.getpid()}.",
                                 dir=path.parent))


def _dead_saves(path: Path, kinds: tuple[str, ...] = ("new", "old")) -> list[Path]:
    """Temporary folders of these kinds beside `path` left by saves on this host whose process
    is gone (killed mid-save: nothing else removes them)."""
    prefixes = [f".{path.name}.{kind}.{socket.gethostname()}." for kind in kinds]
    found = []
    for entry in path.parent.iterdir() if path.parent.is_dir() else ():
        prefix = next((p for p in prefixes if entry.name.startswith(p)), None)
        pid = entry.name[len(prefix):].split(".")[0] if prefix else ""
        if pid.isdigit() and entry.is_dir() and not _process_alive(int(pid)):
            found.append(entry)
    return found


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def check_save_target(path: str | os.PathLike) -> None:
    """Raise FileExistsError unless a router may be saved at `path`: nothing there, an empty
    directory or a router saved before (what it holds beside the router is kept); anything else
    would be deleted by the save."""
    path = Path(path).absolute()
    above = next(parent for parent in path.parents if parent.exists())
    if not above.is_dir():
        raise FileExistsError(f"cannot save the router to {path}: {above} is a file")
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"cannot save the router to {path}: it is a file, not a router directory")
    if path.is_dir() and not (path / "router.json").is_file() and any(path.iterdir()):
        raise FileExistsError(f"cannot save the router to {path}: the directory holds other files "
                              "(no router.json: not a saved router), which saving would delete")


def _link_or_copy(src: str, dst: str) -> None:
    """A hard link where the file system allows one (no second copy of a large file), else a copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _carry_over(old: Path, new: Path) -> None:
    """Put into `new` what the router directory `old` holds beside the router itself (an
    eval.json, notes, a .DS_Store), so that saving over a router keeps them."""
    for entry in old.iterdir():
        if entry.name in ROUTER_FILES:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, new / entry.name, symlinks=True, copy_function=_link_or_copy)
        elif entry.is_symlink():
            os.symlink(os.readlink(entry), new / entry.name)
        else:
            _link_or_copy(entry, new / entry.name)


def save_tree(path: str | os.PathLike, tree, metadata: dict) -> None:
    """Write `tree` and a JSON `metadata` to directory `path` atomically (tmp dir + rename).

    Replaces a router saved there before (keeping the other files beside it: they are linked or
    copied into the new directory before the swap) or an empty directory; refuses anything else at
    `path` (FileExistsError), since replacing it deletes it. Temporary folders that killed saves of the
    same `path` left behind are removed once the new router is in place."""
    path = Path(path).absolute()
    check_save_target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_dir(path, "new")
    aside = None  # a router already at `path`, moved aside (not deleted) until the new one is in place
    try:
        stored = _to_storable(tree)
        with ocp.StandardCheckpointer() as ckpt:
            ckpt.save(tmp / "arrays", stored)
        (tmp / "router.json").write_text(json.dumps({**metadata, "arrays_sha256": stored_digest(stored)}, indent=2))
        if path.exists():
            _carry_over(path, tmp)
            aside = _temp_dir(path, "old") / path.name
            os.replace(path, aside)
        os.replace(tmp, path)
    except BaseException:
        if aside is not None and aside.exists() and not path.exists():
            os.replace(aside, path)  # the previous router back in place
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if aside is not None:
            shutil.rmtree(aside.parent, ignore_errors=True)
    for leftover in _dead_saves(path):
        shutil.rmtree(leftover, ignore_errors=True)


def load_metadata(path: str | os.PathLike) -> dict:
    path = Path(path)
    meta = path / "router.json"
    if not path.is_dir():
        kept = [old / path.name for old in _dead_saves(path.absolute(), ("old",))
                if (old / path.name / "router.json").is_file()]
        hint = (f"; a save that was killed left the router it was replacing in {kept[0]}: move that "
                f"folder to {path} to use it" if kept else "")
        raise CheckpointError(f"no saved router at {path} (not a directory){hint}")
    if not meta.is_file():
        raise CheckpointError(f"{path} is not a saved router: router.json is missing")
    return read_json_object(meta)


def _finite_or_null(obj):
    """`obj` with every NaN or infinite float (a metric undefined for a method, say) as None."""
    if isinstance(obj, dict):
        return {key: _finite_or_null(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_or_null(value) for value in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj


def write_atomically(path: str | os.PathLike, write, tmp_suffix: str = ".tmp") -> Path:
    """write(tmp) into a temporary file beside `path` (named `.<name><tmp_suffix>`; its folder made
    if missing), then renamed to `path`: a reader never sees half a file, and a failed write
    leaves none. Returns `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}{tmp_suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_json(path: str | os.PathLike, obj, indent: int = 2) -> None:
    """Write `obj` as strict JSON to `path` atomically (`write_atomically`). NaN and infinities
    are written as null (JSON has no such numbers; Python would write the non-standard tokens
    NaN/Infinity, which most other readers refuse)."""
    text = json.dumps(_finite_or_null(obj), indent=indent, allow_nan=False)
    write_atomically(path, lambda tmp: tmp.write_text(text))


def read_json_object(path: Path, error: type[Exception] = CheckpointError) -> dict:
    """The JSON object in file `path`; `error` naming the file when it holds anything else."""
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise error(f"{path} is corrupt: {err}") from err
    if not isinstance(value, dict):
        raise error(f"{path} is corrupt: it holds a JSON {type(value).__name__}, not an object")
    return value


def load_tree(path: str | os.PathLike, template, digest: str | None = None):
    """The arrays saved in router directory `path`, restored against `template`; `digest` is the
    one its router.json recorded (`arrays_sha256`; None for routers saved before digests)."""
    path = Path(path).absolute()
    source = f"router arrays in {path}"
    if not (path / "arrays").is_dir():
        raise CheckpointError(f"{source} are missing")
    try:
        with ocp.StandardCheckpointer() as ckpt:
            stored = ckpt.restore(path / "arrays")  # as saved: a target would cast the dtypes silently
    except Exception as err:
        raise CheckpointError(f"{source} cannot be read (corrupt or incomplete): {_brief(err)}") from err
    _check_digest(stored, digest, source, "")
    return _from_storable(stored, template, source)
