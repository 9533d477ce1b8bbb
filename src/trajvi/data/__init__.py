"""Synthetic data with a known answer, and the checks every input AnnData goes through."""

from ._checks import check_counts, validate_anndata
from ._synthetic import synthetic, true_expression

__all__ = ["check_counts", "synthetic", "true_expression", "validate_anndata"]
