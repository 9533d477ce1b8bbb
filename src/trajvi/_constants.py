"""Registry keys and default AnnData keys, in one place."""

from __future__ import annotations

from typing import NamedTuple

from scvi import REGISTRY_KEYS as _SCVI_KEYS


class _RegistryKeys(NamedTuple):
    X_KEY: str = _SCVI_KEYS.X_KEY
    BATCH_KEY: str = _SCVI_KEYS.BATCH_KEY
    SIZE_FACTOR_KEY: str = _SCVI_KEYS.SIZE_FACTOR_KEY
    CONDITION_KEY: str = "condition"
    TIME_KEY: str = "time"
    DOSE_KEY: str = "dose"


class _AnnDataKeys(NamedTuple):
    """Default keys trajvi writes into an AnnData (each ``tl`` function takes its own ``key_added``)."""

    LATENT: str = "X_trajvi"  # obsm (latent), varm (gene embeddings), uns (parameters): tl.latent
    TRAJECTORIES: str = "trajvi"  # obsm (latent paths), uns (times, parameters): tl.trajectories, pl.trajectories
    PREDICTED_MEAN: str = "trajvi_mean"  # layer of NB means in model.predict's AnnData
    PREDICT_UNS: str = "trajvi_predict"  # uns entry of model.predict's AnnData
    SOURCE_CELL: str = "source_cell"  # obs columns of model.predict's AnnData
    SOURCE_CONDITION: str = "source_condition"
    SAMPLE: str = "sample"
    TRANSITIONS: str = "trajvi_transitions"  # uns: tl.transition_matrix, pl.transitions
    FATES: str = "trajvi_fates"  # obsm (probabilities), uns (columns, parameters): tl.fate_probabilities
    ANCESTORS: str = "trajvi_ancestors"  # obs: tl.ancestors
    GROWTH: str = "trajvi_growth"  # obs: tl.growth_rates
    TRENDS: str = "trajvi_trends"  # uns (table, parameters): tl.gene_trends, pl.gene_trends


class _HistoryKeys(NamedTuple):
    """Metric names in ``model.history`` (the ``_train``/``_validation`` suffix is added where they are logged)."""

    RECONSTRUCTION: str = "reconstruction_loss"
    KL: str = "kl_local"
    ADVERSARIAL: str = "adversarial_loss"
    FOOL: str = "fool_loss"
    DISC_ACCURACY: str = "discriminator_accuracy"
    GRAD_NORM: str = "grad_norm"
    N_REPAIRED: str = "n_repaired"
    N_SKIPPED: str = "n_skipped_steps"
    N_LABEL_SKIPS: str = "n_discriminator_skips"
    KL_WEIGHT: str = "kl_weight"
    FLOW: str = "flow_matching_loss"
    RESIDUAL: str = "velocity_residual"
    GRAD_NORM_VELOCITY: str = "grad_norm_velocity"
    TRAIN_LOSS: str = "train_loss"
    ELBO: str = "elbo"


REGISTRY_KEYS = _RegistryKeys()
ADATA_KEYS = _AnnDataKeys()
HISTORY_KEYS = _HistoryKeys()
