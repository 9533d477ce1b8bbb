"""``tl.trajectories``: simulated latent paths written into an AnnData."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from trajvi._constants import ADATA_KEYS
from trajvi._logging import logger

from ._latent import _write_latent
from ._utils import check_model, skip_on_other_ranks

if TYPE_CHECKING:
    from collections.abc import Sequence

    from anndata import AnnData

    from trajvi._types import Integrator
    from trajvi.model import TrajVI


def trajectories(
    adata: AnnData,
    model: TrajVI,
    *,
    source: str | None = None,
    target: str | None = None,
    t_span: tuple[float, float] | None = None,
    path: str | None = None,
    dose: float | None = None,
    indices: Sequence[int] | None = None,
    n_steps: int = 50,
    method: Integrator = "euler",
    latent_key: str = ADATA_KEYS.LATENT,
    key_added: str = ADATA_KEYS.TRAJECTORIES,
    batch_size: int = 1024,
    copy: bool = False,
) -> AnnData | None:
    """Simulate each source cell's latent path and write it into ``adata``.

    Parameters
    ----------
    adata
        AnnData with the model's genes.
    model
        A :class:`~trajvi.TrajVI` with a trained velocity field (:meth:`~trajvi.TrajVI.train_trajectories`).
    source, target, t_span, path, dose, indices, n_steps, method, batch_size
        As in :meth:`~trajvi.TrajVI.simulate_trajectory`.
    latent_key
        ``obsm`` key of the latent of every cell (written by :func:`~trajvi.tl.latent` when missing), used
        by :func:`trajvi.pl.trajectories` to place path points among the cells.
    key_added
        Key of the results.
    copy
        Return a modified copy instead of writing into ``adata``.

    Returns
    -------
    AnnData or None
        ``None``, or the copy when ``copy=True``. Under distributed training only rank 0 writes into
        ``adata`` (the other processes return ``None`` at once; ``copy=True`` works on every process). Writes

        - ``obsm[key_added]``: ``(n_cells, n_steps + 1, n_latent)`` latent paths; ``NaN`` for cells that were
          not simulated;
        - ``uns[key_added]``: ``times``, ``simulated`` (boolean mask of the simulated cells) and ``params``;
        - ``obsm[latent_key]`` and the matching ``varm``/``uns`` entries, if they were missing.
    """
    check_model(model, adata)
    model._require_phase2()
    if not copy and skip_on_other_ranks("tl.trajectories"):
        return None
    if copy:
        adata = adata.copy()
    result = model.simulate_trajectory(
        adata,
        indices=indices,
        source=source,
        target=target,
        t_span=t_span,
        path=path,
        dose=dose,
        n_steps=n_steps,
        method=method,
        decode=False,
        batch_size=batch_size,
    )
    if latent_key not in adata.obsm:  # after the simulation: a refused call leaves adata as it was
        _write_latent(adata, model, key_added=latent_key, batch_size=batch_size)
    rows = adata.obs_names.get_indexer(result.cells)
    n_times, _, n_latent = result.latent.shape
    paths = np.full((adata.n_obs, n_times, n_latent), np.nan, dtype=np.float32)
    paths[rows] = np.transpose(result.latent, (1, 0, 2))
    simulated = np.zeros(adata.n_obs, dtype=bool)
    simulated[rows] = True
    adata.obsm[key_added] = paths
    adata.uns[key_added] = {
        "times": np.asarray(result.times, dtype=float),
        "simulated": simulated,
        "params": {
            "source": result.source,
            "target": result.target if result.target is not None else "",
            "t_span": [float(result.times[0]), float(result.times[-1])],
            "n_steps": int(n_steps),
            "method": method,
            "latent_key": latent_key,
            "path": list(model.trained_paths().paths[result.path]) if result.path is not None else [],
            "path_name": "" if result.path is None else result.path,
            "dose": float(result.dose),
        },
    }
    logger.info("added %r, latent paths of %d cells (adata.obsm) and their times (adata.uns)", key_added, len(rows))
    return adata if copy else None
