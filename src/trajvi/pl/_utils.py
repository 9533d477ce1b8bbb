"""The ending every plot shares: ``save=`` and ``show=`` as in scanpy, and what scanpy's plots return."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import matplotlib.pyplot as plt

from trajvi._logging import logger

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

AxesT = TypeVar("AxesT", "Axes", "list[Axes]")

#: Extensions that a string ``save`` may end with; scanpy reads the same three.
_EXTENSIONS = (".svg", ".pdf", ".png")


def figure_path(writekey: str, save: bool | str) -> Path:
    """Where ``save`` writes a plot named ``writekey``: scanpy's rule, under ``scanpy.settings.figdir``.

    ``True`` gives ``{figdir}/{writekey}{plot_suffix}.{file_format_figs}``; a string is appended to
    ``writekey``, and when it ends with ``.svg``, ``.pdf`` or ``.png`` that extension is used instead of
    ``file_format_figs``.
    """
    import scanpy as sc

    suffix, ext = "", str(sc.settings.file_format_figs)
    if isinstance(save, str):
        suffix = save
        for known in _EXTENSIONS:
            if save.endswith(known):
                suffix, ext = save.removesuffix(known), known[1:]
                break
    elif not isinstance(save, bool):
        msg = f"save must be True, False, None or a str (a file-name suffix); got {type(save).__name__}."
        raise TypeError(msg)
    return Path(sc.settings.figdir) / f"{writekey}{suffix}{sc.settings.plot_suffix}.{ext}"


def save_or_show(
    fig: Figure,
    axes: AxesT,
    *,
    writekey: str,
    show: bool | None,
    save: bool | str | None,
    return_fig: bool,
) -> Figure | AxesT | None:
    """Save and show ``fig`` as scanpy does, and return what scanpy's plots return.

    ``save=None`` follows ``scanpy.settings.autosave``; ``show=None`` follows ``scanpy.settings.autoshow``
    unless the figure is returned. Returns ``fig`` when ``return_fig``, else ``axes`` when not shown, else
    ``None`` (a saved figure that is shown and not returned is closed, as scanpy closes it).
    """
    import scanpy as sc

    save = sc.settings.autosave if save is None else save
    if save is not False:
        path = figure_path(writekey, save)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, bbox_inches="tight")
        logger.info("saved figure to %s", path)
    show = (sc.settings.autoshow and not return_fig) if show is None else show
    if show:
        plt.show()
    if return_fig:
        return fig
    if not show:
        return axes
    if save is not False:
        plt.close(fig)
    return None
