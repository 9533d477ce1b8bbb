"""Inference of :class:`~trajvi.TrajVI`: simulated trajectories, decoded expression and predicted cells."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from scipy import sparse
from scvi.distributions import NegativeBinomial

from trajvi._constants import ADATA_KEYS, REGISTRY_KEYS
from trajvi._runtime import in_fit_context
from trajvi._types import INTEGRATORS, PREDICT_MODES, check_option
from trajvi.data._blocks import read_rows, row_sums
from trajvi.dynamics import simulate, time_grid

from ._calibration import Calibration, cell_groups
from ._cells import cell_positions
from ._routes import Route, resolve_route
from ._trajectories import TrajectoryMixin
from ._transfer import shift_counts, transfer_expression

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

    from anndata import AnnData
    from scvi.utils import attrdict

    from trajvi._types import Integrator, PredictMode
_CHUNK = 65_536  # cells whose counts are read at once to compute library sizes


@dataclass
class TrajectoryResult:
    """Simulated trajectories of a set of cells.

    It unpacks as ``latent, expression, times`` (latent path, decoded means, times), so
    ``traj_z, traj_mean, times = model.simulate_trajectory(...)`` works; the other attributes stay on the
    object.

    Attributes
    ----------
    latent
        ``(T, n_cells, n_latent)`` latent path (numpy, or a torch tensor with a graph when simulated with
        ``with_grad=True``).
    times
        ``(T,)`` times of the path.
    expression
        ``(T, n_cells, n_genes)`` decoded NB means along the path (for ``genes`` only when given), or ``None``.
    genes
        Names of the genes in ``expression``.
    cells
        Names of the simulated cells (``obs_names``).
    source, target
        Conditions the path starts from and goes to (``target`` is ``None`` for a ``t_span``; it may be a
        combination never trained as a path).
    path
        Name of the trained path followed (``None`` for a composition of trained components).
    dose
        Dose the path's condition was scaled by.
    """

    latent: Any
    times: np.ndarray
    expression: Any = None
    genes: list[str] = field(default_factory=list)
    cells: list[str] = field(default_factory=list)
    source: str | None = None
    target: str | None = None
    path: str | None = None
    dose: float = 1.0

    def __iter__(self) -> Iterator[Any]:
        """Unpack as ``(latent, expression, times)``."""
        return iter((self.latent, self.expression, self.times))


class InferenceMixin(TrajectoryMixin):
    """:meth:`simulate_trajectory` and :meth:`predict` over a trained velocity field (phase 2 from the base)."""

    if TYPE_CHECKING:
        # Provided by scvi-tools' base classes; declared here for the type checker only.
        summary_stats: attrdict

        def _make_data_loader(
            self,
            adata: AnnData,
            indices: Sequence[int] | np.ndarray | None = None,
            batch_size: int | None = None,
            **kwargs: Any,
        ) -> Iterable[dict[str, torch.Tensor]]: ...

    def _start_cells(self, adata: AnnData, source: str, indices: Sequence[int] | None) -> np.ndarray:
        """Positions of the cells to start from: ``indices`` (checked), or every cell of ``source``.

        Every selected cell must be of the ``source`` condition: the path starts at its time, and the results
        label the cells with it. Cells of a condition the model was not trained on (in a new ``adata``) are
        the exception: they have no trained condition to contradict ``source``, which says where they start.
        """
        codes = self.get_condition_codes(adata)
        code = self.conditions.index(source)
        if indices is not None:
            idx = cell_positions(indices, adata.n_obs)
            other = (codes[idx] != code) & (codes[idx] < len(self.conditions))
            if other.any():
                found = sorted({self.conditions[c] for c in codes[idx][other]})
                msg = (
                    f"indices selects {int(other.sum())} cell(s) that are not of the source condition {source!r} "
                    f"(they are of {found}); select cells of {source!r}, or pass source= their condition."
                )
                raise ValueError(msg)
        else:
            idx = np.flatnonzero(codes == code)
        if idx.size == 0:
            msg = f"no cells to simulate: condition {source!r} has no cells in adata (or indices is empty)."
            raise ValueError(msg)
        return idx

    def _span(self, route: Route, t_span: tuple[float, float] | None) -> tuple[float, float]:
        if t_span is not None:
            try:
                t0, t1 = (float(t) for t in t_span)
            except (TypeError, ValueError):
                msg = f"t_span={t_span!r}; give two numbers, (start, end)."
                raise ValueError(msg) from None
            if not (np.isfinite(t0) and np.isfinite(t1)):
                msg = f"t_span={t_span}; both times must be finite numbers."
                raise ValueError(msg)
        else:
            assert route.target is not None  # resolve_route sets the target when there is no t_span
            times = dict(zip(route.conditions, route.times, strict=True))
            t0, t1 = times[route.source], times[route.target]
        if t0 == t1:
            msg = f"the path starts and ends at time {t0}; choose a target at another time."
            raise ValueError(msg)
        return t0, t1

    def _mixture_at(self, t: float, route: Route, t_end: float) -> list[tuple[int | None, float]]:
        """Conditions (codes) and weights whose decoded means are mixed at time ``t``.

        At a named target's time: that condition alone. Elsewhere: the two conditions of the followed path
        around ``t``, weighted linearly in time (clamped at the ends). A condition the decoder never saw (a
        combination never trained as a path) decodes under the source condition. Without condition
        decoding: one decode with no condition.
        """
        if self.module.condition_embedding is None:
            return [(None, 1.0)]
        known = [c if c in self.conditions else route.source for c in route.conditions]
        if route.target is not None and t == t_end:
            target = route.target if route.target in self.conditions else route.source
            return [(self.conditions.index(target), 1.0)]
        path_times = np.asarray(route.times)
        codes = [self.conditions.index(c) for c in known]
        t = float(np.clip(t, path_times[0], path_times[-1]))
        k = int(np.clip(np.searchsorted(path_times, t, side="right") - 1, 0, len(path_times) - 2))
        w = (t - path_times[k]) / (path_times[k + 1] - path_times[k])
        return [(code, weight) for code, weight in ((codes[k], 1.0 - w), (codes[k + 1], w)) if weight > 0]

    def _encode_with_grad(self, adata: AnnData, idx: np.ndarray, batch_size: int) -> torch.Tensor:
        """Posterior means of the cells' latent states with the encoder's graph (as the latent representation)."""
        loader = self._make_data_loader(adata=adata, indices=idx, batch_size=batch_size, shuffle=False)
        parts = []
        with torch.enable_grad():
            for tensors in loader:
                parts.append(self.module.inference(**self.module._get_inference_input(tensors))["qzm"])
        return torch.cat(parts)

    def _cell_inputs(
        self,
        adata: AnnData,
        idx: np.ndarray,
        library_size: float | None,
        *,
        with_grad: bool = False,
        batch_size: int = 1024,
    ) -> tuple[torch.Tensor, ...]:
        device = self.module.device
        if with_grad:
            z = self._encode_with_grad(adata, idx, batch_size)
        else:
            z = torch.as_tensor(self.get_latent_representation(adata, indices=idx), device=device)
        batch = torch.as_tensor(np.asarray(self.get_from_registry(adata, REGISTRY_KEYS.BATCH_KEY))[idx], device=device)
        if library_size is not None:
            library = torch.full((len(idx), 1), float(np.log(library_size)), device=device)
        elif self.module.use_size_factor:
            sf = np.asarray(self.get_from_registry(adata, REGISTRY_KEYS.SIZE_FACTOR_KEY)).reshape(-1, 1)[idx]
            library = torch.as_tensor(np.log(sf), dtype=torch.float32, device=device)
        else:
            # library sizes in chunks of cells (in file order for backed data): slicing all the cells at once
            # would copy the whole count matrix
            counts = self.get_from_registry(adata, REGISTRY_KEYS.X_KEY)
            totals = row_sums(counts, idx, max_rows=_CHUNK).reshape(-1, 1)
            library = torch.as_tensor(np.log(np.maximum(totals, 1.0)), dtype=torch.float32, device=device)
        return z.float(), batch.long().reshape(-1, 1), library

    def _decode(
        self,
        z: torch.Tensor,
        library: torch.Tensor,
        batch: torch.Tensor,
        mixture: list[tuple[int | None, float]],
        genes: torch.Tensor | None,
    ) -> torch.Tensor:
        """NB means of latent states, mixed over the conditions of ``mixture`` (see :meth:`_mixture_at`)."""
        total: torch.Tensor | None = None
        for code, weight in mixture:
            cond = torch.full_like(batch, 0 if code is None else code)
            mean = self.module.generative(z, library, batch, cond)["px_rate"]
            mean = mean if genes is None else mean[:, genes]
            total = weight * mean if total is None else total + weight * mean
        assert total is not None  # _mixture_at never returns an empty mixture
        return total

    def _gene_index(self, genes: Sequence[str] | None) -> tuple[torch.Tensor | None, list[str]]:
        names = list(self.adata.var_names)
        if genes is None:
            return None, names
        genes = [genes] if isinstance(genes, str) else list(genes)
        lookup = {g: i for i, g in enumerate(names)}
        missing = [g for g in genes if g not in lookup]
        if missing:
            msg = f"genes not in the model's genes: {missing[:10]}{' ...' if len(missing) > 10 else ''}."
            raise KeyError(msg)
        return torch.as_tensor([lookup[g] for g in genes], device=self.module.device), genes

    @in_fit_context
    def simulate_trajectory(
        self,
        adata: AnnData | None = None,
        *,
        indices: Sequence[int] | None = None,
        source: str | None = None,
        target: str | None = None,
        t_span: tuple[float, float] | None = None,
        path: str | None = None,
        dose: float | None = None,
        n_steps: int = 100,
        method: Integrator = "euler",
        with_grad: bool = False,
        decode: bool = True,
        genes: Sequence[str] | None = None,
        batch_size: int = 1024,
        library_size: float | None = None,
    ) -> TrajectoryResult:
        """Integrate the velocity field from cells' latent states and decode expression along the way.

        When the decoder sees the condition, the NB means at a time between two conditions of the trained
        path are the means decoded under each of them, mixed linearly in time; at a named ``target`` the
        target condition is used. (Interpolating the condition embeddings instead puts the decoder where it
        was never trained; see the design notes for the measurements.)

        Parameters
        ----------
        adata
            AnnData with the model's genes (default: the model's own).
        indices
            Cells to start from: integer positions in ``adata`` (each at most once, none negative) or a
            boolean mask with one value per cell; every one must be of the ``source`` condition (an error
            says otherwise), or of a condition the model was not trained on (cells of new data, which start
            from ``source``). Default: every cell of ``source``.
        source
            Condition the path starts from (default: the first condition of the first trained path, or of
            ``path``).
        target
            Condition the path goes to (default: the end of the trained path through ``source``). A name that
            no trained path reaches from ``source`` is read as a composition of trained components (``"A+B"``
            with ``A`` and ``B`` trained, possibly on different paths) or, with perturbation features, of
            components never trained on; it is reached at the time of a trained path's end from ``source``.
        t_span
            ``(start, end)`` times instead of ``source``/``target`` times, e.g. to reach an unobserved time.
        path
            Name of the trained path to follow (``model.trained_paths().paths``); needed when several trained
            paths go from ``source`` (branches that share a start).
        dose
            Dose of the path's perturbation (default: the mean dose of its cells in training, 1 without a
            registered ``dose_key``); any dose can be asked for.
        n_steps
            Integration steps (fixed-step methods) and number of reported intervals (all methods).
        method
            ``"euler"``, ``"rk4"`` or ``"dopri5"`` (adaptive, torchdiffeq).
        with_grad
            Keep the graph (torch tensors are returned) so that a loss on the path or the decoded means
            reaches the encoder (the cells are encoded from their counts with it), the velocity field and
            the decoder, e.g. to fine-tune the whole model on an expression-space loss; otherwise run under
            inference mode and return numpy arrays.
        decode
            Decode NB means along the path.
        genes
            Decode only these genes (the path holds ``T x cells x genes`` values).
        batch_size
            Cells integrated and decoded at once.
        library_size
            Library size used for decoding (default: each cell's observed one).

        Returns
        -------
        A :class:`TrajectoryResult`; it unpacks as ``latent, expression, times``.
        """
        self._require_phase2()
        check_option(method, INTEGRATORS, "method")
        if target is not None and t_span is not None:
            msg = "give either target or t_span, not both."
            raise ValueError(msg)
        adata = self._validate_anndata(adata)
        if source is not None:
            source = self._check_condition(source, "source")
        route = self._route(source, target, path, t_span is not None, dose)
        t0, t1 = self._span(route, t_span)
        times = time_grid(t0, t1, n_steps)
        idx = self._start_cells(adata, route.source, indices)
        self.module.eval()
        z0, batch, library = self._cell_inputs(adata, idx, library_size, with_grad=with_grad, batch_size=batch_size)
        vel = self.module.velocity
        with torch.no_grad() if not with_grad else torch.enable_grad():
            c = route.condition(vel)
        states = simulate(
            vel.bind(c), z0, times.to(z0.device), method=method, batch_size=batch_size, with_grad=with_grad
        )
        expression = None
        gene_idx, gene_names = self._gene_index(genes)
        if decode:
            expression = self._decode_path(states, batch, library, times, route, t1, gene_idx, batch_size, with_grad)
        latent: torch.Tensor | np.ndarray = states if with_grad else states.cpu().numpy()
        return TrajectoryResult(
            latent=latent,
            times=times.numpy(),
            expression=expression,
            genes=gene_names if decode else [],
            cells=list(adata.obs_names[idx]),
            source=route.source,
            target=route.target,
            path=route.path,
            dose=route.dose,
        )

    def _transferred(
        self,
        adata: AnnData,
        idx: np.ndarray,
        result: TrajectoryResult,
        route: Route,
        library: torch.Tensor,
        batch: torch.Tensor,
        end_means: torch.Tensor,
        batch_size: int,
    ) -> np.ndarray:
        """The source cells' measured counts moved by the change decoded from their start to their end state."""
        t_end = float(result.times[-1])
        start_mixture = self._mixture_at(float(result.times[0]), route, t_end)
        z_start = torch.as_tensor(result.latent[0], device=self.module.device)
        counts = self.get_from_registry(adata, REGISTRY_KEYS.X_KEY)
        parts = []
        for i in range(0, len(idx), batch_size):
            rows = slice(i, i + batch_size)
            start_means = self._decode(z_start[rows], library[rows], batch[rows], start_mixture, None)
            parts.append(
                transfer_expression(
                    read_rows(counts, idx[rows]), start_means.cpu().numpy(), end_means[rows].cpu().numpy()
                )
            )
        return np.concatenate(parts)

    def _route(
        self, source: str | None, target: str | None, path: str | None, t_span_given: bool, dose: float | None
    ) -> Route:
        """The trained path (or composition) to follow; its default dose is the mean dose of the path's cells."""
        paths = self.trained_paths()
        default = 1.0
        if dose is None and REGISTRY_KEYS.DOSE_KEY in self.adata_manager.data_registry:
            start = source if source is not None else paths.paths[next(iter(paths.paths))][0]
            name = path if path in paths.paths else None
            if path is None:
                try:
                    name = paths.path_of(start, target)
                except ValueError:
                    name = None  # several paths: resolve_route says so
            if name is not None:
                doses = np.asarray(self.get_from_registry(self.adata, REGISTRY_KEYS.DOSE_KEY), dtype=float).reshape(-1)
                labels = np.asarray(self.conditions, dtype=object)[self.get_condition_codes()]
                reached = np.isin(labels, paths.paths[name][1:])
                default = float(doses[reached].mean()) if reached.any() else 1.0
        return resolve_route(
            paths, source=source, target=target, path=path, t_span_given=t_span_given, dose=dose, default_dose=default
        )

    def _decode_path(
        self,
        path: torch.Tensor,
        batch: torch.Tensor,
        library: torch.Tensor,
        times: torch.Tensor,
        route: Route,
        t_end: float,
        gene_idx: torch.Tensor | None,
        batch_size: int,
        with_grad: bool,
    ) -> torch.Tensor | np.ndarray:
        """Decoded NB means along ``path``, ``(T, n_cells, n_genes)``: a tensor with its graph, or numpy."""
        context = torch.enable_grad() if with_grad else torch.inference_mode()
        n_genes = self.summary_stats.n_vars if gene_idx is None else len(gene_idx)
        frames: list[torch.Tensor] = []  # with_grad: kept on the device with their graph
        host_frames: list[np.ndarray] = []  # otherwise: copied to the host one at a time
        with context:
            for k, t in enumerate(times.tolist()):
                parts = []
                for i in range(0, path.shape[1], batch_size):
                    sl = slice(i, i + batch_size)
                    mixture = self._mixture_at(t, route, float(t_end))
                    parts.append(self._decode(path[k, sl], library[sl], batch[sl], mixture, gene_idx))
                frame = torch.cat(parts) if parts else torch.zeros(0, n_genes)
                if with_grad:
                    frames.append(frame)
                else:
                    host_frames.append(frame.cpu().numpy().astype(np.float32))
        return torch.stack(frames) if with_grad else np.stack(host_frames)

    @in_fit_context
    def predict(
        self,
        adata: AnnData | None = None,
        *,
        source: str,
        target: str | None = None,
        t_span: tuple[float, float] | None = None,
        path: str | None = None,
        dose: float | None = None,
        indices: Sequence[int] | None = None,
        n_samples: int = 1,
        n_steps: int = 100,
        method: Integrator = "euler",
        batch_size: int = 1024,
        library_size: float | None = None,
        mode: PredictMode = "sample",
        calibrate: bool = False,
        layer_key: str = ADATA_KEYS.PREDICTED_MEAN,
    ) -> AnnData:
        """Predict cells of ``target`` from cells of ``source``, as an AnnData scanpy can analyse.

        The source cells are pushed along the velocity field to the target time and decoded with the
        target condition; NB counts are sampled from the decoded means (``mode="sample"``), or each source
        cell's measured expression is moved by the change decoded along its path (``mode="transfer"``).

        Parameters
        ----------
        adata
            AnnData with the model's genes (default: the model's own).
        source, target, t_span, path, dose, indices, n_steps, method, batch_size, library_size
            As in :meth:`simulate_trajectory`.
        n_samples
            Predicted cells per source cell (independent NB samples of the same mean; 1 with ``"transfer"``).
        mode
            ``"sample"``: NB counts sampled from the means decoded at the end state. ``"transfer"``: the source
            cell's ``log1p(CP10k)`` expression plus, gene by gene, the change of the log-normalised decoded
            means between its start and end states, back on the count scale with the cell's own library size
            (float values; see :mod:`trajvi.model._transfer`). Sampled cells are the model's view of the
            target, including its reconstruction error; transferred cells keep everything measured in the
            source cell that the model does not reconstruct, which put them much closer to the real cells
            when the change is small (held-out double perturbations, a knockout without effect; the
            benchmarks page measures both modes). Transfer needs the source cells' counts, so not
            ``library_size``.
        calibrate
            Add to every predicted cell, in ``log1p(CP10k)`` space, the field's mean miss on the same query where
            the truth is known: the real ``target`` cells of the cell's own group of ``couple_within`` against
            the model's prediction (same ``mode``) from that group's ``source`` cells, or the mean miss over the
            groups with real ``target`` cells when the cell's group has none; for a combination never seen, the
            sum of its components' misses; shrunk towards zero by its standard error, with the rule (none, per
            gene, or one factor for all genes) that validates best on split halves of the cells
            (:mod:`trajvi.model._calibration`; the rule and its losses in ``uns``). It corrects the part of an effect
            the latent cannot hold (weak gene-level shifts). Needs ``target`` (not ``t_span``), no ``dose``, and
            real cells of the target (or of each component) among the cells phase 2 used. ``X`` then holds float
            values; ``layers[layer_key]`` keeps the model's own means.
        layer_key
            Layer that receives the NB means.

        Returns
        -------
        AnnData with sampled (or transferred) counts in ``X`` (CSR), the NB means in ``layers[layer_key]``,
        ``var`` as in the input, and ``obs`` holding the source cell (``source_cell``), its obs columns,
        ``condition`` (the target, or ``t=<time>``; the registered condition column, when it has another name,
        says the same, and a registered time column holds the target time), ``source_condition`` and
        ``sample``.
        """
        from anndata import AnnData

        if int(n_samples) < 1:
            msg = f"n_samples={n_samples}; it must be at least 1."
            raise ValueError(msg)
        check_option(mode, PREDICT_MODES, "mode")
        if mode == "transfer" and (int(n_samples) != 1 or library_size is not None):
            msg = (
                f"mode='transfer' moves each source cell's measured counts once: n_samples must be 1 (got "
                f"{n_samples}) and library_size None (got {library_size}); use mode='sample' for several samples "
                "or a fixed library size."
            )
            raise ValueError(msg)
        if calibrate and (target is None or dose is not None):
            msg = (
                "calibrate=True compares the prediction with real cells of its target condition: give target=... "
                f"(not t_span) and no dose (got target={target!r}, dose={dose!r})."
            )
            raise ValueError(msg)
        result = self.simulate_trajectory(
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
        route = self._route(result.source, result.target, result.path, result.target is None, result.dose)
        adata = self._validate_anndata(adata)
        idx = adata.obs_names.get_indexer(result.cells)
        _, batch, library = self._cell_inputs(adata, idx, library_size)
        z_end = torch.as_tensor(result.latent[-1], device=self.module.device)
        t_end = float(result.times[-1])
        with torch.inference_mode():
            means = torch.cat(
                [
                    self._decode(
                        z_end[i : i + batch_size],
                        library[i : i + batch_size],
                        batch[i : i + batch_size],
                        self._mixture_at(t_end, route, t_end),
                        None,
                    )
                    for i in range(0, len(idx), batch_size)
                ]
            )
            if mode == "transfer":
                samples = [self._transferred(adata, idx, result, route, library, batch, means, batch_size)]
            else:
                dist = NegativeBinomial(mu=means.clamp_min(1e-12), theta=self.module.theta)
                samples = [dist.sample().cpu().numpy().astype(np.float32) for _ in range(int(n_samples))]
        calibrated_on: list[str] = []
        shrinkage: dict[str, Any] = {}
        if calibrate:
            assert result.target is not None  # checked above
            settings = {"mode": mode, "n_samples": n_samples, "n_steps": n_steps, "method": method}
            calibration = Calibration(self, result.source or source, path, {**settings, "batch_size": batch_size})
            shift = calibration.shifts(result.target, cell_groups(self, adata, idx))
            samples = [shift_counts(s, shift) for s in samples]
            calibrated_on = calibration.used
            shrinkage = {"rule": calibration.rule, "validation_loss": calibration.losses}
        mean_np = means.cpu().numpy().astype(np.float32)
        label = result.target if result.target is not None else f"t={t_end:g}"
        source_obs = adata.obs.iloc[idx]
        user_cols = [c for c in source_obs.columns if not str(c).startswith("_scvi")]
        obs = pd.concat([source_obs[user_cols]] * int(n_samples), ignore_index=True)
        obs[ADATA_KEYS.SOURCE_CELL] = np.tile(np.asarray(result.cells), int(n_samples))
        obs[ADATA_KEYS.SOURCE_CONDITION] = result.source
        obs["condition"] = pd.Categorical([label] * len(obs))
        setup_args = self.adata_manager.registry["setup_args"]
        if setup_args.get("condition_key") not in (None, "condition"):  # the user's own column names the target too
            obs[setup_args["condition_key"]] = pd.Categorical([label] * len(obs))
        if setup_args.get("time_key") is not None:
            obs[setup_args["time_key"]] = t_end
        obs[ADATA_KEYS.SAMPLE] = np.repeat(np.arange(int(n_samples)), len(idx))
        obs.index = [f"{c}-pred{s}" for c, s in zip(obs[ADATA_KEYS.SOURCE_CELL], obs[ADATA_KEYS.SAMPLE], strict=True)]
        out = AnnData(
            X=sparse.csr_matrix(np.concatenate(samples)),
            obs=obs,
            # an AnnCollection (through scvi-tools' CollectionAdapter) has var_names but no var
            var=adata.var.copy() if hasattr(adata, "var") else pd.DataFrame(index=pd.Index(adata.var_names)),
            layers={layer_key: np.concatenate([mean_np] * int(n_samples))},
        )
        out.uns[ADATA_KEYS.PREDICT_UNS] = {
            "params": {
                "source": result.source,
                "target": label,
                "t_span": [float(result.times[0]), t_end],
                "n_samples": int(n_samples),
                "n_steps": int(n_steps),
                "method": method,
                "path": "" if result.path is None else result.path,
                "dose": float(result.dose),
                "mode": mode,
                "calibrate": bool(calibrate),
                "calibrated_on": calibrated_on,
                "calibration_shrinkage": shrinkage,
            }
        }
        return out
