"""Klein 2015 mESC time course: leave-one-day-out interpolation, scoring, baselines and the method registry.

Protocol (``klein2015_mesc_lif_counts.h5ad``, 1000 cells x 900 genes, raw counts, ``obs["day"]`` in 0/2/4/7):

- one intermediate day is held out (not the first nor the last); the **sources** are the cells of the previous
  day, the **end point** the cells of the next day, the **truth** the held-out day's cells;
- the **training set** is every cell of the other days;
- **evaluation space**: 5 whitened principal components of log1p(normalize_total 1e4) expression,
  ``sklearn.decomposition.PCA(n_components=5, whiten=True, random_state=0)`` fitted on **all real cells of the
  file, all days including the held-out one** (the convention of the TrajectoryNet / torchcfm benchmarks,
  where the PCA is part of the data set; it only defines the space, but it has seen the held-out day);
- **metric**: exact Wasserstein-1 (POT, Euclidean cost, uniform weights; :func:`_metrics.wasserstein1`) between
  the predicted cells and the held-out day's cells in that space.

Reference numbers computed alongside: the ``floor``, W1 between two random halves of the real held-out
cells, averaged over seeded splits (half-size sets, so it slightly overstates the noise of a full-size set).

Adding a method: write ``f(split: KleinSplit) -> Prediction`` and register it, ``METHODS["name"] = f``. It may
use ``split.train``, ``split.sources``, ``split.endpoint``, the times and ``split.pca``, never the counts of
``split.truth`` (its size is fine: it is how many cells a sampler should draw). It returns either sampled count
matrices in ``split.train.var_names`` order (``Prediction(counts=[...])``, normalised, log1p'd and projected with
``split.pca`` exactly like the real cells, samples stacked) or coordinates in the evaluation space
(``Prediction(coords=...)``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anndata as ad
import numpy as np
import ot
import scipy.sparse as sp
from sklearn.decomposition import PCA

from _common import Prediction, data_file, log
from _metrics import log_normalize, score_as_cells, wasserstein1

if TYPE_CHECKING:
    from collections.abc import Callable

DATA_NAME = "klein2015_mesc_lif_counts.h5ad"
TIME_KEY = "day"


def _dense(x: np.ndarray | sp.spmatrix) -> np.ndarray:
    return x.toarray() if sp.issparse(x) else np.asarray(x)


@dataclass
class KleinSplit:
    """One leave-one-day-out split of the Klein data, as the methods see it.

    Attributes
    ----------
    train
        Every cell except the held-out day's (a copy, raw integer counts, ``obs["day"]``).
    sources
        The previous day's cells (subset of ``train``), pushed forward by the methods.
    endpoint
        The next day's cells (subset of ``train``), the interpolation end point.
    truth
        The held-out day's cells, for scoring only.
    t_prev, t_held, t_next
        The previous, held-out and next day.
    pca
        The evaluation embedding: 5 whitened PCs fitted on log-normalised expression of all real cells.
    seed
        Random seed the method should use.
    n_samples
        Count samples per predicted cell a generative method should return.
    """

    train: ad.AnnData
    sources: ad.AnnData
    endpoint: ad.AnnData
    truth: ad.AnnData
    t_prev: float
    t_held: float
    t_next: float
    pca: PCA
    seed: int = 0
    n_samples: int = 5

    @property
    def fraction(self) -> float:
        """Position of the held-out day between its neighbours, ``(t_held - t_prev) / (t_next - t_prev)``."""
        return (self.t_held - self.t_prev) / (self.t_next - self.t_prev)

    def embed(self, counts: np.ndarray | sp.spmatrix) -> np.ndarray:
        """Project counts into the evaluation space (log-normalise like the real cells, then the PCA)."""
        return self.pca.transform(log_normalize(counts))

    def sizes(self) -> dict[str, Any]:
        """Numbers of cells in every set."""
        days = self.train.obs[TIME_KEY].value_counts().sort_index()
        return {
            "train": self.train.n_obs,
            "sources": self.sources.n_obs,
            "endpoint": self.endpoint.n_obs,
            "truth": self.truth.n_obs,
            "genes": self.train.n_vars,
            "train_by_day": {str(k): int(v) for k, v in days.items()},
        }


def load_klein() -> ad.AnnData:
    """Read ``klein2015_mesc_lif_counts.h5ad`` from ``../shared/data`` (exit with a message if absent)."""
    return ad.read_h5ad(data_file(DATA_NAME))


def fit_pca(adata: ad.AnnData, n_components: int = 5) -> PCA:
    """Whitened PCA of log1p(normalize_total 1e4) expression of all cells of ``adata``."""
    return PCA(n_components=n_components, whiten=True, random_state=0).fit(log_normalize(adata.X))


def make_split(adata: ad.AnnData, held_out_day: float, *, seed: int = 0, n_samples: int = 5) -> KleinSplit:
    """Build the :class:`KleinSplit` holding out one intermediate day (see the module docstring).

    Parameters
    ----------
    adata
        The full Klein file.
    held_out_day
        The day to hold out; must be a day of the file other than the first and the last.
    seed, n_samples
        Stored on the split for the methods.

    Returns
    -------
    KleinSplit
        Copies of the sets and the PCA fitted on all cells of ``adata``.
    """
    days = np.asarray(adata.obs[TIME_KEY], dtype=float)
    unique = np.unique(days)
    if held_out_day not in unique:
        msg = f"--held-out-day {held_out_day} is not a day of the file: {unique.tolist()}"
        raise SystemExit(msg)
    pos = int(np.searchsorted(unique, held_out_day))
    if pos in (0, len(unique) - 1):
        msg = f"--held-out-day must be an intermediate day ({unique[1:-1].tolist()}), not {held_out_day}"
        raise SystemExit(msg)
    t_prev, t_next = float(unique[pos - 1]), float(unique[pos + 1])
    return KleinSplit(
        train=adata[days != held_out_day].copy(),
        sources=adata[days == t_prev].copy(),
        endpoint=adata[days == t_next].copy(),
        truth=adata[days == held_out_day].copy(),
        t_prev=t_prev,
        t_held=float(held_out_day),
        t_next=t_next,
        pca=fit_pca(adata),
        seed=seed,
        n_samples=n_samples,
    )


@dataclass
class KleinEvaluation:
    """Scoring context of one split.

    Attributes
    ----------
    truth_coords
        The held-out day's real cells in the evaluation space.
    pca
        The evaluation PCA (the split's).
    n_genes
        Number of genes a count prediction must have.
    """

    truth_coords: np.ndarray
    pca: PCA
    n_genes: int

    @classmethod
    def build(cls, split: KleinSplit) -> KleinEvaluation:
        """Embed the truth with the split's PCA."""
        return cls(truth_coords=split.embed(split.truth.X), pca=split.pca, n_genes=split.truth.n_vars)

    def predicted_coords(self, prediction: Prediction) -> np.ndarray:
        """The predicted cells in the evaluation space (sampled counts are normalised, projected and stacked)."""
        kind = prediction.kind()
        if kind == "counts":
            if any(np.shape(m)[1] != self.n_genes for m in prediction.counts):
                msg = f"count predictions must have {self.n_genes} genes"
                raise ValueError(msg)
            out = self.pca.transform(score_as_cells(prediction.counts))
        elif kind == "coords":
            out = np.asarray(prediction.coords, dtype=np.float64)
        else:
            msg = "Klein predictions must be sampled counts or PC coordinates, not log-normalised cells"
            raise ValueError(msg)
        if out.ndim != 2 or out.shape[1] != self.truth_coords.shape[1]:
            msg = f"predicted coordinates must have shape (n, {self.truth_coords.shape[1]}), got {out.shape}"
            raise ValueError(msg)
        return out

    def score(self, prediction: Prediction) -> dict[str, float]:
        """Wasserstein-1 to the held-out day and the number of predicted cells scored."""
        coords = self.predicted_coords(prediction)
        return {"w1": wasserstein1(coords, self.truth_coords), "n_cells_scored": len(coords)}

    def floor(self, n_splits: int = 10, seed: int = 0) -> list[float]:
        """W1 between two random halves of the real held-out cells, for ``n_splits`` seeded splits."""
        rng = np.random.default_rng(seed)
        out = []
        for _ in range(n_splits):
            perm = rng.permutation(len(self.truth_coords))
            half = len(perm) // 2
            out.append(wasserstein1(self.truth_coords[perm[:half]], self.truth_coords[perm[half:]]))
        return out


# ---------------------------------------------------------------------------------------------------------------------
# Baselines
# ---------------------------------------------------------------------------------------------------------------------


def predict_previous_day(split: KleinSplit) -> Prediction:
    """Baseline ``previous_day``: the previous day's real cells, unchanged."""
    return Prediction(counts=[_dense(split.sources.X)], info={"day": split.t_prev})


def predict_ot_interpolation(split: KleinSplit) -> Prediction:
    """Baseline ``ot_interpolation``: exact-OT displacement interpolation between the neighbouring days.

    In the evaluation space, the exact plan between the previous and next day (uniform weights, squared
    Euclidean cost, ``ot.emd``) is computed; as many pairs as there are held-out cells are drawn i.i.d. from
    the plan (probability proportional to its mass, seeded with ``split.seed``), and each pair ``(x, y)`` is
    placed at ``(1 - s) x + s y`` with ``s = (t_held - t_prev) / (t_next - t_prev)``.
    """
    x0, x1 = split.embed(split.sources.X), split.embed(split.endpoint.X)
    a, b = np.full(len(x0), 1.0 / len(x0)), np.full(len(x1), 1.0 / len(x1))
    plan = ot.emd(a, b, ot.dist(x0, x1, metric="sqeuclidean"), numItermax=10_000_000)
    mass = plan.ravel() / plan.sum()
    rng = np.random.default_rng(split.seed)
    n_draw = split.truth.n_obs
    flat = rng.choice(mass.size, size=n_draw, p=mass)
    i, j = np.divmod(flat, plan.shape[1])
    s = split.fraction
    coords = (1.0 - s) * x0[i] + s * x1[j]
    info = {"s": s, "n_pairs_drawn": n_draw, "plan_support": int((plan > 0).sum())}
    return Prediction(coords=coords, info=info)


#: Method registry: name -> function(split) returning a :class:`Prediction` of the held-out day's cells.
#: Register new methods with ``METHODS["name"] = function``; they run in insertion order.
METHODS: dict[str, Callable[[KleinSplit], Prediction]] = {
    "previous_day": predict_previous_day,
    "ot_interpolation": predict_ot_interpolation,
}


def run_methods(
    split: KleinSplit, evaluation: KleinEvaluation, names: list[str], methods: dict[str, Callable] | None = None
) -> list[dict[str, Any]]:
    """Run and score the named methods; one result dict per method (W1, wall seconds, info).

    Parameters
    ----------
    split
        The split the methods receive.
    evaluation
        Scoring context of the same split.
    names
        Registered method names, in the order to run them.
    methods
        Registry to take them from (default :data:`METHODS`).

    Returns
    -------
    list[dict]
        ``{"method", "w1", "n_cells_scored", "wall_seconds", "score_seconds", "info"}`` per method.
    """
    registry = METHODS if methods is None else methods
    results = []
    for name in names:
        log(f"method {name}: predicting")
        t0 = time.perf_counter()
        prediction = registry[name](split)
        wall = time.perf_counter() - t0
        t1 = time.perf_counter()
        scores = evaluation.score(prediction)
        score_s = time.perf_counter() - t1
        log(f"method {name}: {wall:.1f}s; W1 {scores['w1']:.4f} (scored in {score_s:.1f}s)")
        results.append(
            {
                "method": name,
                **scores,
                "wall_seconds": wall,
                "score_seconds": score_s,
                "prediction": prediction.kind(),
                "info": prediction.info,
            }
        )
    return results
