"""TrajVI: the scvi-tools model class of trajvi."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scvi import settings as scvi_settings
from scvi.data import AnnDataManager
from scvi.data.fields import CategoricalObsField, LayerField, NumericalObsField
from scvi.dataloaders import DataSplitter
from scvi.model._utils import get_max_epochs_heuristic, use_distributed_sampler
from scvi.model.base import BaseModelClass, RNASeqMixin, VAEMixin

from trajvi._constants import REGISTRY_KEYS
from trajvi._distributed import check_strategy, global_rank
from trajvi._logging import logger
from trajvi._runtime import in_fit_context
from trajvi._types import ADVERSARIAL_TARGETS, AdversarialTarget, Composition, check_option
from trajvi.data import validate_anndata
from trajvi.diagnostics import monitor_callbacks
from trajvi.module import TrajVIModule
from trajvi.train import (
    TrajVITrainingPlan,
    TrajVITrainRunner,
    check_plan_kwargs,
    check_precision,
    choose_data_on_device,
    report_guards,
    select_data_splitter,
)
from trajvi.train._device_data import DEFAULT_MAX_DENSE_BYTES

from ._compat import check_categories, check_genes, read_saved
from ._fates import FateMixin
from ._group_scores import GroupScoresMixin
from ._likelihood import LikelihoodMixin
from ._query import QueryMixin

if TYPE_CHECKING:
    from anndata import AnnData
    from lightning.pytorch import LightningDataModule


def _trains_on_gpu(accelerator: str) -> bool:
    """Whether Lightning will train on a CUDA device for this ``accelerator`` setting."""
    import torch

    return accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()


class TrajVI(QueryMixin, FateMixin, GroupScoresMixin, LikelihoodMixin, RNASeqMixin, VAEMixin, BaseModelClass):
    """Learn how single cells move between conditions, from raw counts.

    Phase 1 (:meth:`train`) fits a negative-binomial VAE whose decoder attends over learned gene
    embeddings, with a discriminator that reads the condition (or the batch) from the latent and an
    adversarial term that makes the latent hard to read. Phase 2 (:meth:`train_trajectories`) couples the
    cells of one condition to the next by optimal transport in that latent and fits a velocity field along
    the coupled pairs; :meth:`simulate_trajectory` integrates the field from chosen cells and decodes
    expression along the way, and :meth:`predict` returns predicted cells of a target condition as an AnnData.

    Parameters
    ----------
    adata
        AnnData registered with :meth:`setup_anndata`.
    n_latent
        Dimension of the latent space.
    n_hidden
        Width of the hidden layers and of the gene embeddings.
    n_layers
        Number of hidden layers of the encoder and the decoder.
    dropout_rate
        Dropout of the encoder.
    n_attention
        Width ``d_k`` of the decoder's queries and keys.
    decode_condition
        Whether the decoder sees the condition (through a learned embedding). Off by default: the
        condition then has to live in the latent state, where phase 2 moves it; on the Kang and Klein
        benchmarks this predicted held-out cells better overall (``docs/benchmarks.md``).
    adversarial_weight
        Weight of the fooling term: how strongly the latent is pushed to hide the adversarial target.
        0 still trains the discriminator, as a monitor of what the latent reveals.
    adversarial_target
        What the discriminator reads from the latent: ``"condition"`` or ``"batch"`` (needs a
        registered ``batch_key``).
    n_condition_embed
        Width of the condition embedding used by the decoder.
    n_hidden_velocity, n_layers_velocity
        Width and depth of the velocity field's state-dependent part (phase 2).
    n_condition_velocity
        Width of the vector ``c`` that tells the velocity field what a path does (its perturbation,
        combination, dose or branch; phase 2).
    composition
        How the vectors of a combination's components combine: ``"sum"`` or ``"deepset"`` (a small network
        over the sum); see the benchmarks for the measurements.

    Examples
    --------
    Phase 1, the count model, on synthetic counts with a known answer:

    >>> import trajvi
    >>> adata = trajvi.data.synthetic(n_cells=2000, n_genes=300)
    >>> trajvi.TrajVI.setup_anndata(adata, condition_key="condition", batch_key="batch")
    >>> model = trajvi.TrajVI(adata, n_latent=10)
    >>> model.train(max_epochs=60)
    >>> adata.obsm["X_trajvi"] = model.get_latent_representation()

    Phase 2, optimal transport and the velocity field from control to stimulated cells, coupled within
    each cell type:

    >>> model.train_trajectories(["control", "stimulated"], couple_within="cell_type")

    Then simulate where control cells go (the latent path, the decoded means of two genes along it and the
    times) and predict stimulated cells as an AnnData of counts:

    >>> control = (adata.obs["condition"] == "control").to_numpy().nonzero()[0]
    >>> result = model.simulate_trajectory(
    ...     indices=control[:100], source="control", target="stimulated", genes=["gene_1", "gene_2"]
    ... )
    >>> result.latent.shape, result.expression.shape, result.times.shape
    ((101, 100, 10), (101, 100, 2), (101,))
    >>> predicted = model.predict(source="control", target="stimulated")
    >>> model.save("my_model/")  # later: trajvi.TrajVI.load("my_model/", adata=adata)
    """

    _module_cls = TrajVIModule
    _training_plan_cls = TrajVITrainingPlan
    _train_runner_cls = TrajVITrainRunner
    _data_splitter_cls = DataSplitter

    def __init__(
        self,
        adata: AnnData,
        *,
        n_latent: int = 10,
        n_hidden: int = 128,
        n_layers: int = 1,
        dropout_rate: float = 0.1,
        n_attention: int = 64,
        decode_condition: bool = False,
        adversarial_weight: float = 1.0,
        adversarial_target: AdversarialTarget = "condition",
        n_condition_embed: int = 16,
        n_hidden_velocity: int = 128,
        n_layers_velocity: int = 3,
        n_condition_velocity: int = 16,
        composition: Composition = "sum",
    ) -> None:
        super().__init__(adata)
        for name, value in {
            "n_latent": n_latent,
            "n_hidden": n_hidden,
            "n_layers": n_layers,
            "n_attention": n_attention,
            "n_condition_embed": n_condition_embed,
            "n_hidden_velocity": n_hidden_velocity,
            "n_layers_velocity": n_layers_velocity,
        }.items():
            if int(value) < 1:
                msg = f"{name}={value}; it must be a positive integer."
                raise ValueError(msg)
        if int(n_condition_velocity) < 0:
            msg = f"n_condition_velocity={n_condition_velocity}; it must be >= 0 (0: a field that ignores the path)."
            raise ValueError(msg)
        if not 0.0 <= dropout_rate < 1.0:
            msg = f"dropout_rate={dropout_rate}; it must be in [0, 1)."
            raise ValueError(msg)
        if adversarial_weight < 0:
            msg = f"adversarial_weight={adversarial_weight}; it must be >= 0."
            raise ValueError(msg)
        check_option(adversarial_target, ADVERSARIAL_TARGETS, "adversarial_target")
        n_batch = self.summary_stats.n_batch
        n_conditions = len(self.conditions)
        if adversarial_target == "batch":
            if self.registry_keys_setup.get("batch_key") is None:
                msg = (
                    "adversarial_target='batch' needs a batch: call TrajVI.setup_anndata(..., batch_key=...) "
                    "or use adversarial_target='condition'."
                )
                raise ValueError(msg)
            n_classes = n_batch
        else:
            n_classes = n_conditions
        self.module = self._module_cls(
            self.summary_stats.n_vars,
            n_batch=n_batch,
            n_conditions=n_conditions,
            n_latent=n_latent,
            n_hidden=n_hidden,
            n_layers=n_layers,
            dropout_rate=dropout_rate,
            n_attention=n_attention,
            decode_condition=decode_condition,
            n_condition_embed=n_condition_embed,
            n_adversary_classes=n_classes,
            n_hidden_velocity=n_hidden_velocity,
            n_layers_velocity=n_layers_velocity,
            n_condition_velocity=n_condition_velocity,
            composition=composition,
            use_size_factor=REGISTRY_KEYS.SIZE_FACTOR_KEY in self.adata_manager.data_registry,
        )
        self.adversarial_target = adversarial_target
        self.adversarial_weight = float(adversarial_weight)
        self._init_trajectory_state()
        self._model_summary_string = (
            f"TrajVI: n_latent={n_latent}, n_hidden={n_hidden}, n_layers={n_layers}, n_attention={n_attention}, "
            f"decode_condition={decode_condition}, adversary on the {adversarial_target} "
            f"(weight {adversarial_weight}); {n_conditions} conditions, {n_batch} batch(es)."
        )
        self.init_params_ = self._get_init_params(locals())

    # -- registration --------------------------------------------------------------------------
    @classmethod
    def setup_anndata(
        cls,
        adata: AnnData,
        condition_key: str,
        *,
        layer: str | None = None,
        batch_key: str | None = None,
        time_key: str | None = None,
        size_factor_key: str | None = None,
        dose_key: str | None = None,
        **kwargs: Any,
    ) -> None:
        """Check an AnnData and register its counts and conditions with scvi-tools.

        Every input check runs first, and nothing is registered if one fails. Registration adds
        scvi-tools' ``_scvi_*`` columns to ``obs`` and two uuid keys to ``uns``; nothing else changes.

        Parameters
        ----------
        adata
            AnnData with raw counts.
        condition_key
            Column of ``obs`` with the condition of each cell (at least two categories).
        layer
            Layer holding the raw counts; ``None`` uses ``X``.
        batch_key
            Column of ``obs`` with a nuisance batch.
        time_key
            Numeric column of ``obs`` giving the position of each condition on the trajectory axis
            (constant within a condition), for time courses.
        size_factor_key
            Numeric column of ``obs`` with size factors, used instead of observed library sizes.
        dose_key
            Numeric column of ``obs`` with the dose of each cell's perturbation (finite, >= 0; 0 for controls).
            Phase 2 scales what a path does by the dose of the cells it reaches, so unseen doses can be asked
            for (``predict(..., dose=...)``).
        **kwargs
            Passed to :meth:`scvi.data.AnnDataManager.register_fields` (``load()`` uses it).

        Raises
        ------
        KeyError
            A named key is not in ``obs`` or ``layers`` (the message lists the available ones).
        ValueError
            Counts are negative, non-finite or not integers; the condition has a single category;
            the time varies within a condition; size factors are not positive; doses are negative or not finite.
        """
        setup_method_args = cls._get_setup_method_args(**locals())
        validate_anndata(
            adata,
            condition_key,
            layer=layer,
            batch_key=batch_key,
            time_key=time_key,
            size_factor_key=size_factor_key,
            dose_key=dose_key,
            min_conditions=1 if kwargs.get("source_registry") is not None else 2,  # a trained model's conditions
        )
        fields = [
            LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=True),
            CategoricalObsField(REGISTRY_KEYS.BATCH_KEY, batch_key),
            CategoricalObsField(REGISTRY_KEYS.CONDITION_KEY, condition_key),
            NumericalObsField(REGISTRY_KEYS.TIME_KEY, time_key, required=False),
            NumericalObsField(REGISTRY_KEYS.SIZE_FACTOR_KEY, size_factor_key, required=False),
            NumericalObsField(REGISTRY_KEYS.DOSE_KEY, dose_key, required=False),
        ]
        adata_manager = AnnDataManager(fields=fields, setup_method_args=setup_method_args)
        adata_manager.register_fields(adata, **kwargs)
        cls.register_manager(adata_manager)

    @classmethod
    def load(cls, dir_path: str, adata: AnnData | None = None, **kwargs: Any) -> TrajVI:
        """Load a model saved with :meth:`save`.

        Checks first that the folder holds a trajvi model and that ``adata`` (when given) has the model's
        genes, in order, and no condition or batch the model has not seen; each problem gets its own error.
        Only load folders you trust: scvi-tools unpickles them.

        Parameters
        ----------
        dir_path
            Folder written by :meth:`save`.
        adata
            AnnData to attach (default: the one saved with the model, if any).
        **kwargs
            Passed to :meth:`scvi.model.base.BaseModelClass.load` (``accelerator``, ``device``, ``prefix``, ...).
        """
        saved = read_saved(dir_path, kwargs.get("prefix"))
        if adata is not None:
            check_genes(adata, saved["var_names"])
            check_categories(adata, saved["attr_dict"]["registry_"])
        return super().load(dir_path, adata=adata, **kwargs)

    def save(self, dir_path: str, *args: Any, **kwargs: Any) -> None:
        """Save the model (see :meth:`scvi.model.base.BaseModelClass.save`); under DDP, from rank 0 only.

        Every process of a distributed run goes on with the script after training and holds the same
        parameters; only rank 0 writes the folder, the others return without writing.

        Parameters
        ----------
        dir_path
            Folder to write.
        *args, **kwargs
            Passed to :meth:`scvi.model.base.BaseModelClass.save` (``overwrite``, ``save_anndata``, ...).
        """
        rank = global_rank()
        if rank != 0:
            logger.debug("save(%r) skipped on process rank %d: only rank 0 writes.", str(dir_path), rank)
            return
        super().save(dir_path, *args, **kwargs)

    def _validate_anndata(self, adata: AnnData | None = None, copy_if_view: bool = True) -> AnnData:
        """scvi-tools' validation, after trajvi's checks and registration of another AnnData (or a copy)."""
        if adata is not None and adata is not self.adata and not self._registered_here(adata):
            self._register_new_anndata(adata, copy_if_view=copy_if_view)
        return super()._validate_anndata(adata, copy_if_view=copy_if_view)

    @property
    def registry_keys_setup(self) -> dict[str, Any]:
        """The arguments :meth:`setup_anndata` was called with."""
        return dict(self.adata_manager.registry["setup_args"])

    @property
    def conditions(self) -> list[str]:
        """Condition categories, in the order of their codes."""
        mapping = self.adata_manager.get_state_registry(REGISTRY_KEYS.CONDITION_KEY).categorical_mapping
        return [str(c) for c in mapping]

    # -- phase 1 -------------------------------------------------------------------------------
    @in_fit_context
    def train(
        self,
        max_epochs: int | None = None,
        *,
        batch_size: int = 128,
        lr: float = 1e-3,
        adversary_lr: float = 1e-3,
        weight_decay: float = 1e-6,
        n_epochs_kl_warmup: int | None = None,
        gradient_clip_val: float | None = 50.0,
        accumulate_grad_batches: int = 1,
        max_consecutive_skips: int = 20,
        monitor_gradients_every_n_steps: int | None = None,
        check_gradients_every_n_epochs: int | None = None,
        monitor_parameters: bool = False,
        loss_curves_dir: str | None = None,
        train_size: float | None = None,
        validation_size: float | None = None,
        shuffle_set_split: bool = True,
        accelerator: str = "auto",
        devices: int | list[int] | str = "auto",
        early_stopping: bool = False,
        datasplitter_kwargs: dict[str, Any] | None = None,
        data_on_device: bool | None = None,
        datamodule: LightningDataModule | None = None,
        plan_kwargs: dict[str, Any] | None = None,
        **trainer_kwargs: Any,
    ) -> None:
        """Fit phase 1: the count model and its adversary.

        Counts may be in memory or read from disk (``anndata.read_h5ad(path, backed="r")``, or an
        AnnCollection through :class:`scvi.dataloaders.CollectionAdapter`). From disk they are read in
        contiguous blocks of cells, several blocks shuffled together (:class:`~trajvi.train.DiskDataSplitter`;
        ``datasplitter_kwargs`` takes ``block_size`` and ``blocks_per_pool``, and ``block_size=0`` reads
        every minibatch on its own through scvi-tools' loader, fully shuffled but several times slower).

        Parameters
        ----------
        max_epochs
            Number of passes over the training cells; ``None`` uses scvi-tools' heuristic
            (``min(round(20000 / n_cells * 400), 400)``).
        batch_size
            Cells per minibatch (per process under DDP).
        lr, adversary_lr, weight_decay
            Adam settings of the VAE and of the discriminator.
        n_epochs_kl_warmup
            Epochs over which the KL weight rises from 0 to 1; ``None`` ties it to half of
            ``max_epochs``, so that every training reaches the full ELBO.
        gradient_clip_val
            Largest gradient norm; larger ones are scaled down (``None`` or 0: no clipping).
        accumulate_grad_batches
            Minibatches whose gradients are summed before each optimizer step.
        max_consecutive_skips
            Stop with an error after this many consecutive steps with a non-finite loss or gradient.
        monitor_gradients_every_n_steps
            Log the gradient norm of each parameter block every this many optimizer steps
            (``grad_norm/<block>`` in the history).
        check_gradients_every_n_epochs
            Run :func:`~trajvi.diagnostics.check_gradients` every this many epochs (a logged report, and
            ``grad_nonfinite_count``/``grad_zero_count`` in the history).
        monitor_parameters
            Log statistics of each parameter block every epoch (``param_mean/<block>``, ``param_std``,
            ``param_absmax``, ``param_nonfinite``).
        loss_curves_dir
            Folder that receives ``history.csv`` (every epoch) and ``history.png`` (at the end).
        train_size, validation_size, shuffle_set_split
            The train/validation split (:class:`scvi.dataloaders.DataSplitter`).
        accelerator, devices
            Lightning's hardware settings. For several GPUs or nodes pass
            ``strategy="ddp_find_unused_parameters_true"`` (and ``num_nodes``) too, from a script, with the
            same ``scvi.settings.seed`` on every process; see ``docs/distributed.md``.
        early_stopping
            Stop when the validation ELBO stops improving (see :class:`scvi.train.Trainer`).
        datasplitter_kwargs
            More arguments for the :class:`~scvi.dataloaders.DataSplitter`.
        data_on_device
            Copy the registered data to the training device once and cut minibatches there
            (:class:`~trajvi.train.DeviceDataSplitter`) instead of slicing the AnnData on the host for
            every minibatch. ``None`` (default) does so when training on a GPU, with the counts in memory
            (not backed) and taking at most half of the device's free memory; the choice is logged
            (:func:`~trajvi.train.choose_data_on_device`). ``True`` with counts read from disk is an
            error. The split, keys and dtypes are scvi-tools'; counts larger than ``max_dense_bytes`` (a
            ``datasplitter_kwargs`` entry, 2 GiB by default) stay sparse on the device.
        datamodule
            A :class:`~lightning.pytorch.core.LightningDataModule` used in place of the default data
            splitter, as in scvi-tools (a custom loader, say). Its minibatches must be dicts with the
            registered keys of this model's AnnData (``X``, ``batch``, the condition, ...), as scvi-tools'
            :class:`~scvi.dataloaders.AnnDataLoader` yields them. ``train_size``, ``validation_size``,
            ``shuffle_set_split``, ``batch_size``, ``datasplitter_kwargs`` and ``data_on_device`` are then
            not used. Phase 2 uses all cells unless the datamodule has a ``train_idx``.
        plan_kwargs
            More arguments for :class:`~trajvi.train.TrajVITrainingPlan`, for example ``cuda_graph=False`` to
            run every step eagerly on a GPU (by default one CUDA device replays the step as a CUDA graph),
            ``check_guards_every_n_steps``, ``adversary_steps`` or ``adversarial_weight`` (for this call). An
            argument of ``train()`` itself (``lr``, ``gradient_clip_val``, ...) is not repeated here: an
            error says to pass it directly.
        **trainer_kwargs
            Passed to :class:`scvi.train.Trainer` (for example ``precision``, ``strategy``, ``num_nodes``,
            ``enable_progress_bar``, ``log_save_dir``).

        Raises
        ------
        ValueError
            A DDP strategy that does not look for unused parameters (plain ``"ddp"``), or a DDP strategy
            with a random train/validation split and no ``scvi.settings.seed`` (each process would draw
            its own split).
        """
        if max_epochs is None:
            max_epochs = get_max_epochs_heuristic(self.adata.n_obs)
        if int(max_epochs) < 1:
            msg = f"max_epochs={max_epochs}; it must be at least 1."
            raise ValueError(msg)
        if int(batch_size) < 2:
            msg = f"batch_size={batch_size}; it must be at least 2 (batch normalisation needs two cells)."
            raise ValueError(msg)
        if n_epochs_kl_warmup is None:
            n_epochs_kl_warmup = max(1, int(max_epochs) // 2)
        explicit: dict[str, Any] = {
            "lr": lr,
            "adversary_lr": adversary_lr,
            "weight_decay": weight_decay,
            "n_epochs_kl_warmup": n_epochs_kl_warmup,
            "gradient_clip_val": gradient_clip_val,
            "accumulate_grad_batches": accumulate_grad_batches,
            "max_consecutive_skips": max_consecutive_skips,
        }
        plan_kwargs = check_plan_kwargs(self._training_plan_cls, plan_kwargs, explicit=explicit, caller="train")
        plan_args: dict[str, Any] = {
            "adversarial_weight": self.adversarial_weight,
            "adversary_key": REGISTRY_KEYS.CONDITION_KEY
            if self.adversarial_target == "condition"
            else REGISTRY_KEYS.BATCH_KEY,
            **explicit,
        }
        plan_args.update(plan_kwargs)
        strategy = trainer_kwargs.get("strategy")
        check_strategy(strategy)
        check_precision(trainer_kwargs.get("precision"))
        if (
            datamodule is None
            and use_distributed_sampler(strategy)
            and shuffle_set_split
            and scvi_settings.seed is None
            and "external_indexing" not in (datasplitter_kwargs or {})
        ):
            msg = (
                "Distributed training needs the same train/validation split on every process: set "
                "scvi.settings.seed = 0 (any number, the same everywhere) at the top of the script, or pass "
                "shuffle_set_split=False or datasplitter_kwargs={'external_indexing': [...]}."
            )
            raise ValueError(msg)
        data_splitter = datamodule
        if data_splitter is None:
            splitter_kwargs = dict(datasplitter_kwargs or {})
            on_device = choose_data_on_device(
                self.adata_manager,
                requested=data_on_device,
                on_gpu=_trains_on_gpu(accelerator),
                device_index=devices[0] if isinstance(devices, list) else 0,
                max_dense_bytes=splitter_kwargs.get("max_dense_bytes", DEFAULT_MAX_DENSE_BYTES),
            )
            distributed = use_distributed_sampler(trainer_kwargs.get("strategy"))
            splitter_cls, splitter_kwargs = select_data_splitter(
                self.adata_manager,
                on_device=on_device,
                distributed=distributed,
                splitter_kwargs=splitter_kwargs,
                default=self._data_splitter_cls,
            )
            data_splitter = splitter_cls(
                self.adata_manager,
                train_size=train_size,
                validation_size=validation_size,
                batch_size=batch_size,
                shuffle_set_split=shuffle_set_split,
                distributed_sampler=distributed,
                **splitter_kwargs,
            )
        elif data_on_device:
            msg = "data_on_device=True and datamodule=... exclude each other: the datamodule brings its own loaders."
            raise ValueError(msg)
        trainer_kwargs["callbacks"] = [
            *trainer_kwargs.get("callbacks", []),
            *monitor_callbacks(
                monitor_gradients_every_n_steps=monitor_gradients_every_n_steps,
                check_gradients_every_n_epochs=check_gradients_every_n_epochs,
                monitor_parameters=monitor_parameters,
                loss_curves_dir=loss_curves_dir,
            ),
        ]
        plan = self._training_plan_cls(self.module, **plan_args)
        trainer_kwargs.setdefault("early_stopping", early_stopping)
        runner = self._train_runner_cls(
            self,
            training_plan=plan,
            data_splitter=data_splitter,
            max_epochs=int(max_epochs),
            accelerator=accelerator,
            devices=devices,
            **trainer_kwargs,
        )
        self.module.train()  # scvi-tools leaves it in eval mode after a fit; a second call starts in train mode
        runner()
        report_guards(plan)

    # -- getters -------------------------------------------------------------------------------
    def get_gene_embeddings(self) -> pd.DataFrame:
        """The learned gene embeddings ``E`` of the decoder, ``(n_genes, n_hidden)``, indexed by gene."""
        self._check_if_trained(warn=True)
        emb = self.module.decoder.gene_embeddings.detach().cpu().numpy()
        return pd.DataFrame(emb, index=self.adata.var_names.copy(), columns=[f"dim_{i}" for i in range(emb.shape[1])])

    def get_condition_codes(self, adata: AnnData | None = None) -> np.ndarray:
        """Integer code of each cell's condition, in the order of :attr:`conditions`.

        Cells of a condition the model was not trained on (in a new ``adata``) get codes from
        ``len(conditions)`` on.
        """
        adata = self._validate_anndata(adata)
        values = self.get_from_registry(adata, REGISTRY_KEYS.CONDITION_KEY)
        return np.asarray(values).reshape(-1).astype(int)
