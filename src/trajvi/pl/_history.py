"""``pl.history``: loss curves and gradient norms of a trained model."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import matplotlib.pyplot as plt

from trajvi._constants import HISTORY_KEYS as H

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
    return_fig: bool = False,
) -> Figure | None:
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
        Show the figure (default: when not returning it).
    return_fig
        Return the figure.
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
    if show or (show is None and not return_fig):
        plt.show()
    return fig if return_fig else None
