"""``pl.history``: loss curves and gradient norms of a trained model."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import matplotlib.pyplot as plt

from trajvi._constants import HISTORY_KEYS as H

from ._utils import save_or_show

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from trajvi.model import TrajVI

_PANELS: dict[str, tuple[str, ...]] = {
    "reconstruction (per cell)": (H.RECONSTRUCTION + "_train", H.RECONSTRUCTION + "_validation"),
    "KL (per cell)": (H.KL + "_train", H.KL + "_validation"),
    "adversary": (
        H.ADVERSARIAL + "_train",
        H.FOOL + "_train",
        H.DISC_ACCURACY + "_train",
        H.DISC_ACCURACY + "_validation",
    ),
    "gradient norm": (H.GRAD_NORM + "_train", H.GRAD_NORM_VELOCITY + "_train"),
    "phase 2: flow matching": (H.FLOW + "_train", H.RESIDUAL + "_train"),
    "repairs and skips": (H.N_REPAIRED + "_train", H.N_SKIPPED + "_train", H.N_LABEL_SKIPS + "_train"),
}


def history(
    model: TrajVI,
    *,
    keys: dict[str, tuple[str, ...]] | None = None,
    axs: list[Axes] | None = None,
    show: bool | None = None,
    save: bool | str | None = None,
    return_fig: bool = False,
) -> Figure | list[Axes] | None:
    """Plot the training history: losses, adversary, gradient norms and the repair counters.

    Parameters
    ----------
    model
        A trained :class:`~trajvi.TrajVI`.
    keys
        Panel title to the history keys drawn in it; defaults to every panel whose keys are present.
    axs
        Axes to draw into, one per panel; new ones are made when ``None``.
    show
        Show the figure (default: ``scanpy.settings.autoshow``, unless the figure is returned).
    save
        Write the figure under ``scanpy.settings.figdir`` as scanpy does: ``True`` writes
        ``history{plot_suffix}.{file_format_figs}``; a string is appended to ``history`` (ending in
        ``.png``, ``.pdf`` or ``.svg``, it also sets the format). Default: ``scanpy.settings.autosave``.
    return_fig
        Return the figure.

    Returns
    -------
    The figure with ``return_fig=True``; else the axes, one per panel, when not shown (``show=False``); else
    ``None``.
    """
    if not model.is_trained or not model.history:
        msg = "The model has no training history. Run model.train() first."
        raise RuntimeError(msg)
    hist = model.history
    panels = {t: tuple(k for k in ks if k in hist) for t, ks in (keys or _PANELS).items()}
    panels = {t: ks for t, ks in panels.items() if ks}
    if axs is None:
        fig, grid = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.0), squeeze=False)
        axs = list(grid[0])
    else:
        if len(axs) < len(panels):
            msg = f"axs has {len(axs)} axes; {len(panels)} are needed ({list(panels)})."
            raise ValueError(msg)
        fig = cast("Figure", axs[0].figure)  # matplotlib also allows a SubFigure, which has no tight_layout
    for ax, (title, ks) in zip(axs, panels.items(), strict=False):
        for key in ks:
            frame = hist[key]
            ax.plot(frame.index, frame.iloc[:, 0].to_numpy(), label=key.replace("_train", "").replace("_", " "))
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.legend(fontsize="x-small")
    fig.tight_layout()
    return save_or_show(fig, list(axs[: len(panels)]), writekey="history", show=show, save=save, return_fig=return_fig)
