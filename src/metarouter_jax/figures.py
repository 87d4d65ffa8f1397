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


def save_png(fig, path: str | os.PathLike) -> Path:
    """Lay out and write `fig` as a PNG at `path` (.png added where it has no suffix, as
    matplotlib would); returns the path written."""
    fig.tight_layout()
    path = Path(path)
    if not path.suffix:
        path = path.with_suffix(".png")
    fig.savefig(path, dpi=120)
    return path
