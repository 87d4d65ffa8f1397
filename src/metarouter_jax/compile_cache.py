"""JAX's persistent compilation cache, as the command line and the experiment scripts use it.

On a CPU, compiling is a large part of a short run: the README's main job (three routers
meta-trained on the synthetic benchmark) trains in 70 s on an empty cache and 49 s on a filled
one, and without a cache every seed of an experiment compiles the same programs again, since
each `make_train` traces fresh functions. JAX can keep compiled executables on disk, keyed by the optimised program, the compile
options, XLA_FLAGS, the device and the jax/jaxlib versions, so an unchanged program is loaded
instead of compiled, and the executable loaded is the one compiled: results are bit-identical.

`metarouter` and `experiments/*.py` call `enable_compilation_cache()` before they compile
anything. The library never turns the cache on by itself on import; benchmarks turn it off
(`disable_compilation_cache`), since they time compilation.

Where it lives, first match wins:

1. the `path` argument;
2. `METAROUTER_COMPILE_CACHE`: a folder, or `off` (also `0`, `false`, `no`) for no cache;
3. `JAX_COMPILATION_CACHE_DIR`, JAX's own setting, when it is set;
4. `$XDG_CACHE_HOME/metarouter_jax/xla` (default `~/.cache/metarouter_jax/xla`).

The cache is trusted code: never point it at a folder that others can write to.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from pathlib import Path

import jax
from jax.experimental.compilation_cache import compilation_cache

ENV = "METAROUTER_COMPILE_CACHE"
OFF = frozenset({"off", "0", "false", "no"})
MIN_COMPILE_S = 0.1          # programs that compile faster are not worth a file
MAX_BYTES = 1 << 30          # least recently used entries go beyond 1 GiB


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/metarouter_jax/xla`, or `~/.cache/metarouter_jax/xla`."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "metarouter_jax" / "xla"


def resolve_cache_dir(path: str | os.PathLike | None = None) -> Path | None:
    """The cache folder by the rules in the module docstring; None when the cache is off."""
    if path is not None:
        return Path(path).expanduser()
    setting = os.environ.get(ENV, "").strip()
    if setting.lower() in OFF:
        return None
    if setting:
        return Path(setting).expanduser()
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return Path(os.environ["JAX_COMPILATION_CACHE_DIR"]).expanduser()
    return default_cache_dir()


def enable_compilation_cache(path: str | os.PathLike | None = None, *, min_compile_s: float = MIN_COMPILE_S,
                             max_bytes: int = MAX_BYTES) -> Path | None:
    """Keep compiled programs on disk (see the module docstring for where); returns the folder.

    Returns None, with the cache off, when `METAROUTER_COMPILE_CACHE=off` or when the folder
    cannot be created (a warning says why: a run never fails for want of a cache). Takes effect
    for every later compilation, also after earlier ones in the same process.

    Args:
      min_compile_s: programs that compiled in less time are not written.
      max_bytes: beyond this size the least recently used entries are deleted (-1: no bound).
    """
    directory = resolve_cache_dir(path)
    if directory is None:
        disable_compilation_cache()
        return None
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        warnings.warn(f"compilation cache off: cannot create {directory} ({err}); set {ENV} to a writable "
                      f"folder or to 'off'", stacklevel=2)
        disable_compilation_cache()
        return None
    if max_bytes != -1 and importlib.util.find_spec("filelock") is None:  # a dependency; JAX needs it to evict
        warnings.warn("the compilation cache is unbounded: install `filelock` to bound it", stacklevel=2)
        max_bytes = -1
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_s))
    jax.config.update("jax_compilation_cache_max_size", int(max_bytes))
    compilation_cache.reset_cache()  # JAX opens its cache once, at the first compilation: reopen it here
    return directory


def disable_compilation_cache() -> None:
    """No persistent cache for later compilations in this process (e.g. to time them)."""
    jax.config.update("jax_enable_compilation_cache", False)
    compilation_cache.reset_cache()

