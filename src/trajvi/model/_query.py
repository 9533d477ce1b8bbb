"""New data for a trained model: query mapping of new batches (scArches), and cells of unseen conditions.

Two kinds of new cells:

- cells of a batch the model never saw: the encoder and decoder read the batch, so the model has no weights
  for it. :meth:`QueryMixin.load_query_data` builds a query model from the reference (scArches, through
  scvi-tools' :class:`~scvi.model.base.ArchesMixin` helpers): the layers that read the batch get one more
  column per new batch, trained on the query cells while every other parameter of the reference stays as it
  was, and phase 2 (the velocity field, the trained paths, the couplings) is carried over unchanged;
- cells of a condition the model never saw: the encoder does not read the condition, so they are encoded
  (latents, trajectories from an explicit trained ``source``) like any other cells; only what needs the
  condition itself (a path to it, or decoding under it when ``decode_condition=True``) is refused.

Any AnnData other than the model's own (new data, or a copy such as ``adata.copy()``) is checked first
(genes, batches) and then registered as new data, so nothing is written into it before a check fails.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from scvi.data import _constants as scvi_constants
from scvi.data._utils import _assign_adata_uuid, _check_if_view
from scvi.model._utils import parse_device_args
from scvi.model.base import ArchesMixin
from scvi.model.base._archesmixin import _get_loaded_data
from scvi.model.base._save_load import _initialize_model
from torch import nn

from trajvi._logging import logger
from trajvi.train import QueryTrainingPlan

from ._compat import check_categories, check_genes, read_saved, unseen_categories

if TYPE_CHECKING:
    from anndata import AnnData
    from scvi.data import AnnDataManager

    from trajvi.module import TrajVIModule

#: Name of the (non-persistent) buffer that masks the gradient of a partly trainable weight of a query model.
MASK_BUFFER = "query_grad_mask"


class QueryMixin(ArchesMixin):
    """Query mapping (scArches) and registration of new AnnData for :class:`~trajvi.TrajVI`.

    :meth:`prepare_query_anndata` is scvi-tools' own: it orders a query's genes like the reference's and fills
    the missing ones with zeros.
    """

    if TYPE_CHECKING:
        # Provided by the model class and scvi-tools' base classes; declared for the type checker only.
        id: str
        adata: AnnData
        adata_manager: AnnDataManager
        module: TrajVIModule
        registry_: dict[str, Any]
        is_trained_: bool
        _per_instance_manager_store: dict[str, dict[str, AnnDataManager]]
        _training_plan_cls: type

        def _register_manager_for_instance(self, adata_manager: AnnDataManager) -> None: ...

    @classmethod
    def load_query_data(
        cls,
        adata: AnnData,
        reference_model: Any,
        *,
        inplace_subset_query_vars: bool = False,
        accelerator: str = "auto",
        device: int | str = "auto",
    ) -> Any:
        """Map cells of new batches onto a trained reference model (scArches).

        The query model has the reference's weights, plus one input column per new batch in every layer of
        the encoder and the decoder that reads the batch. Those columns are the only parameters
        :meth:`~trajvi.TrajVI.train` then fits (on the query cells, without weight decay and without the
        adversary); every other parameter, the batch-norm statistics, the dispersion, the gene embeddings,
        the discriminator and the velocity field stay exactly the reference's, so reference cells get the
        same latents from the query model as from the reference. When the decoder reads the condition
        (``decode_condition=True``), conditions new to the reference get an embedding row each, trained
        the same way. A reference trained on a single batch had no batch column: its batch gets a zero
        column (so that its cells are still encoded as before) and the new batches trainable ones.

        Phase 2 is carried over: the trained paths, the velocity field and the couplings are the
        reference's, so the query model can :meth:`~trajvi.TrajVI.predict` and
        :meth:`~trajvi.TrajVI.simulate_trajectory` from its cells once trained (or retrain phase 2 with
        :meth:`~trajvi.TrajVI.train_trajectories` on query cells).

        The freezing lives on the object: a query model that is saved and loaded again is an ordinary model
        (a further :meth:`~trajvi.TrajVI.train` then updates every parameter).

        Parameters
        ----------
        adata
            Query cells, with the reference's genes in its order (see
            :meth:`~scvi.model.base.ArchesMixin.prepare_query_anndata`) and the columns the reference was
            set up with; at least one batch must be new to the reference. It needs no
            :meth:`~trajvi.TrajVI.setup_anndata`: it is registered with the reference's setup, its new
            categories appended (a query of a single condition is fine).
        reference_model
            A trained :class:`~trajvi.TrajVI`, or the folder it was saved to.
        inplace_subset_query_vars
            Subset and order ``adata``'s genes like the reference's, in place, first.
        accelerator, device
            Where the query model lives (see :class:`scvi.train.Trainer`).

        Returns
        -------
        The query model (not yet trained on the query cells).

        Raises
        ------
        ValueError
            The reference was set up without a ``batch_key`` (new cells need no mapping then: pass them to
            the reference's methods), ``adata`` has no batch the reference does not know, other genes, or
            input that :meth:`~trajvi.TrajVI.setup_anndata` refuses; a folder that holds no trajvi model.
        RuntimeError
            The reference is not trained.
        TypeError
            ``reference_model`` is neither a :class:`~trajvi.TrajVI` nor a folder.

        Examples
        --------
        >>> query = trajvi.TrajVI.load_query_data(query_adata, "reference_model/")
        >>> query.train(max_epochs=100)
        >>> query_adata.obsm["X_trajvi"] = query.get_latent_representation()
        >>> predicted = query.predict(source="control", target="IFNb")
        """
        if isinstance(reference_model, str | Path):
            saved = read_saved(reference_model)
            attr_dict = copy.deepcopy(saved["attr_dict"])
            var_names = saved["var_names"]
            reference_state = dict(saved["model_state_dict"])
            reference_state.pop("pyro_param_store", None)  # scvi-tools saves it beside the module's state
        elif isinstance(reference_model, cls):
            attr_dict, var_names, reference_state, _ = _get_loaded_data(reference_model, device="cpu")
            attr_dict = copy.deepcopy(attr_dict)
        else:
            msg = (
                f"reference_model is a {type(reference_model).__name__}; give a trained {cls.__name__} or the "
                "folder it was saved to."
            )
            raise TypeError(msg)
        if not attr_dict.get("is_trained_", False):
            msg = "the reference model is not trained. Run reference.train() first, then map query data onto it."
            raise RuntimeError(msg)
        registry = attr_dict.pop("registry_")
        if inplace_subset_query_vars:
            adata._inplace_subset_var([str(v) for v in var_names])
        try:
            check_genes(adata, var_names)
        except ValueError as err:
            msg = (
                f"{err} For a query, TrajVI.prepare_query_anndata(adata, reference_model) orders the genes and "
                "fills the missing ones with zeros."
            )
            raise ValueError(msg) from None
        n_reference = _reference_sizes(registry)
        unseen = _query_categories(adata, registry, decode_condition=_decodes_condition(reference_state))

        _, _, torch_device = parse_device_args(
            accelerator=accelerator, devices=device, return_device="torch", validate_single_device=True
        )
        uuid = adata.uns.get(scvi_constants._SCVI_UUID_KEY)
        stored = cls._setup_adata_manager_store.get(uuid) if uuid is not None else None
        if stored is not None and stored.adata is not adata:
            _assign_adata_uuid(adata, overwrite=True)  # a copy of set-up data: keep the original's setup its own
        cls.setup_anndata(
            adata, source_registry=registry, extend_categories=True, **registry[scvi_constants._SETUP_ARGS_KEY]
        )
        model = _initialize_model(cls, adata, registry, attr_dict, None)
        model.to_device(torch_device)
        model.module.load_state_dict(_grown_state(model.module.state_dict(), reference_state))
        trainable = freeze_reference(model.module, n_reference["batch"], n_reference["condition"])
        model.module.eval()
        model._training_plan_cls = QueryTrainingPlan
        model.is_trained_ = False
        logger.info(
            "Query model: %d new batch(es) %s%s; trainable: %s.",
            len(unseen["batch"]),
            unseen["batch"],
            f", {len(unseen['condition'])} new condition(s) {unseen['condition']}" if unseen["condition"] else "",
            ", ".join(trainable),
        )
        return model

    @staticmethod
    def prepare_query_anndata(
        adata: AnnData,
        reference_model: Any,
        return_reference_var_names: bool = False,
        inplace: bool = True,
    ) -> Any:
        """Order a query's genes like the reference's and fill the missing ones with zeros (scvi-tools' own).

        See :meth:`scvi.model.base.ArchesMixin.prepare_query_anndata`; ``reference_model`` may also be a
        :class:`pathlib.Path`. With ``inplace=True`` (the default) ``adata`` itself is changed.
        """
        if isinstance(reference_model, Path):
            reference_model = str(reference_model)
        return ArchesMixin.prepare_query_anndata(
            adata, reference_model, return_reference_var_names=return_reference_var_names, inplace=inplace
        )

    # -- new AnnData ------------------------------------------------------------------------------
    def _registered_here(self, adata: AnnData) -> bool:
        """Whether ``adata`` itself (not a copy of it) is registered with this model; reads without writing."""
        uuid = adata.uns.get(scvi_constants._SCVI_UUID_KEY)
        manager = type(self)._per_instance_manager_store.get(self.id, {}).get(uuid) if uuid is not None else None
        return manager is not None and manager.adata is adata

    def _register_new_anndata(self, adata: AnnData, copy_if_view: bool = True) -> None:
        """Check an AnnData that is not the model's own and register it, with its unseen conditions appended.

        A copy of a registered AnnData (same ``uns['_scvi_uuid']``) gets its own id first, as scvi-tools
        does, so that the original's registration is left alone. Nothing is written before the checks pass.
        """
        registry = self.adata_manager.registry if self.adata_manager is not None else self.registry_
        check_genes(adata, self.adata.var_names if self.adata is not None else registry["var_names"])
        new_conditions = check_categories(adata, registry, allow_new_conditions=self.adata_manager is not None)
        _check_if_view(adata, copy_if_view=copy_if_view)
        if self.adata_manager is None:  # loaded without data: scvi-tools sets the AnnData up as the model's own
            return
        if new_conditions:
            logger.info(
                "adata has cells of condition(s) %s that the model was not trained on: they are encoded like any "
                "cell (the encoder does not read the condition), but cannot be the source or target of a path%s.",
                new_conditions,
                " nor be decoded under their own condition (decode_condition=True)"
                if self.module.condition_embedding is not None
                else "",
            )
        uuid = adata.uns.get(scvi_constants._SCVI_UUID_KEY)
        if uuid is not None and uuid in type(self)._per_instance_manager_store.get(self.id, {}):
            _assign_adata_uuid(adata, overwrite=True)  # a copy of data registered here carries the original's id
        manager = self.adata_manager.transfer_fields(adata, extend_categories=bool(new_conditions))
        self._register_manager_for_instance(manager)


def _decodes_condition(state: dict[str, torch.Tensor]) -> bool:
    return "condition_embedding.weight" in state


def _reference_sizes(registry: dict[str, Any]) -> dict[str, int]:
    fields = registry[scvi_constants._FIELD_REGISTRIES_KEY]
    return {
        name: len(fields[name][scvi_constants._STATE_REGISTRY_KEY]["categorical_mapping"])
        for name in ("batch", "condition")
    }


def _query_categories(adata: AnnData, registry: dict[str, Any], *, decode_condition: bool) -> dict[str, list[str]]:
    """The query's new batches and conditions; a ValueError when there is nothing to map."""
    setup_args = registry[scvi_constants._SETUP_ARGS_KEY]
    if setup_args.get("batch_key") is None:
        msg = (
            "the reference model was set up without a batch_key, so its layers do not read a batch and there is "
            "nothing to map: pass the new cells to the reference's methods directly (e.g. "
            "model.get_latent_representation(adata)), or train a reference with TrajVI.setup_anndata(..., "
            "batch_key=...)."
        )
        raise ValueError(msg)
    unseen = unseen_categories(adata, registry)
    if not unseen["batch"] and not (decode_condition and unseen["condition"]):
        known = registry[scvi_constants._FIELD_REGISTRIES_KEY]["batch"]["state_registry"]["categorical_mapping"]
        msg = (
            f"adata.obs[{setup_args['batch_key']!r}] holds no batch that the reference was not trained on (it knows "
            f"{[str(b) for b in known]}): there is nothing to map. Pass these cells to the reference's methods "
            "directly (e.g. model.get_latent_representation(adata))."
        )
        raise ValueError(msg)
    return unseen


def _grown_state(new: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The reference's state in the query module's shapes: each reference tensor in the leading block.

    New categories are appended after the reference's (scvi-tools extends the mappings at the end), so the
    reference's entries keep their positions and the new ones keep the query module's fresh values. A tensor
    that is smaller in the query module (the velocity field's component table, sized at load) is passed on
    as it is: the module sizes it on load.
    """
    state: dict[str, torch.Tensor] = {}
    for key, ref in reference.items():
        target = new.get(key)
        if target is None or target.shape == ref.shape or target.dim() != ref.dim():
            state[key] = ref
            continue
        if any(r > t for r, t in zip(ref.shape, target.shape, strict=True)):
            state[key] = ref
            continue
        grown = target.detach().clone()
        grown[tuple(slice(0, r) for r in ref.shape)] = ref.to(grown.device, grown.dtype)
        state[key] = grown
    return state


def _mask_gradient(layer: nn.Module, parameter: torch.Tensor) -> None:
    """Let only the entries of ``parameter`` where ``layer.<MASK_BUFFER>`` is 1 receive a gradient."""

    def hook(grad: torch.Tensor) -> torch.Tensor:
        return grad * getattr(layer, MASK_BUFFER)

    parameter.requires_grad_(True)
    parameter.register_hook(hook)


def freeze_reference(module: TrajVIModule, n_reference_batches: int, n_reference_conditions: int) -> list[str]:
    """Freeze a query module's reference parts; leave the new batches' columns (conditions' rows) trainable.

    Every parameter of the count model and the discriminator stops requiring gradients (the velocity field is
    left alone: phase 1 never trains it, and phase 2 may be retrained on query cells). The weight matrices
    of the encoder and decoder layers that read the batch train again, with their gradients masked to the
    columns of the new batches; the batch-norm statistics stop updating. With condition decoding, the
    condition embedding trains on the rows of new conditions. Returns the names of the trainable parameters.
    """
    for name, parameter in module.named_parameters():
        if not name.startswith("velocity."):
            parameter.requires_grad_(False)
    trainable = []
    n_new = module.n_batch - n_reference_batches
    for prefix, body in (("encoder.body", module.encoder.body), ("decoder.body", module.decoder.body)):
        for sub in body.modules():
            if isinstance(sub, nn.BatchNorm1d):
                sub.momentum = 0.0  # running statistics stay the reference's
        n_cat = sum(body.n_cat_list)
        if n_new <= 0 or n_cat == 0:
            continue
        for i, layers in enumerate(body.fc_layers):
            linear = layers[0]
            if not body.inject_into_layer(i) or not isinstance(linear, nn.Linear):
                continue
            weight = linear.weight
            with torch.no_grad():
                if n_reference_batches == 1:  # the reference read no batch: its batch gets a zero column
                    weight[:, weight.shape[1] - n_cat : weight.shape[1] - n_new] = 0.0
            mask = torch.zeros_like(weight)
            mask[:, -n_new:] = 1.0
            linear.register_buffer(MASK_BUFFER, mask, persistent=False)
            _mask_gradient(linear, weight)
            trainable.append(f"{prefix}.fc_layers.Layer {i}.0.weight[:, -{n_new}:]")
    embedding = module.condition_embedding
    n_new_conditions = module.n_conditions - n_reference_conditions
    if embedding is not None and n_new_conditions > 0:
        mask = torch.zeros_like(embedding.weight)
        mask[-n_new_conditions:] = 1.0
        embedding.register_buffer(MASK_BUFFER, mask, persistent=False)
        _mask_gradient(embedding, embedding.weight)
        trainable.append(f"condition_embedding.weight[-{n_new_conditions}:]")
    return trainable
