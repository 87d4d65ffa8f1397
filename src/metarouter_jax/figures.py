"""PNG figures for the library's plots: matplotlib imported only when a plot is asked for (the
`plot` extra), and no pyplot, so the caller's global backend is left alone."""

from __future__ import annotations

import os
from pathlib import Path


def new_figure(figsize: tuple[float, float]):
    """A matplotlib Figure, or ImportError saying how to install matplotlib."""
    try:
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError("plotting needs matplotlib: pip install 'metarouter_jax[plot]'") from err
    return Figure(figsize=figsize)


def png_path(path: str | os.PathLike) -> Path:
    """The PNG file a plot given `path` writes: `path`, with .png added where it has no suffix.
    ValueError for another suffix or a folder there; callers check before a long computation."""
    given = Path(path)
    path = given if given.suffix else given.with_suffix(".png")
    if path.suffix.lower() != ".png":
        raise ValueError(f"{path}: plots are written as PNG: give a .png path (or one without a suffix)")
    for p in {given, path}:
        if p.is_dir():
            raise ValueError(f"{p}: is a directory")
    return path


def save_png(fig, path: str | os.PathLike) -> Path:
    """Lay out and write `fig` as a PNG at `png_path(path)`, its folder made if missing,
    atomically (a temporary file beside it, then renamed); returns the path written."""
    from metarouter_jax.checkpoint import write_atomically

    path = png_path(path)
    fig.tight_layout()
    return write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=120), ".tmp.png")   # matplotlib reads the suffix
