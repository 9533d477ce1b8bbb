"""One function per dataset the tutorials and benchmarks use."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from ._load import load

if TYPE_CHECKING:
    import os
    from collections.abc import Callable

    from anndata import AnnData

_F = TypeVar("_F", bound="Callable[..., AnnData]")

_WHERE = """
    Parameters
    ----------
    path
        An existing copy of the file: it is checked and returned (nothing is downloaded).
    cache_dir
        The folder of built files (and of downloads, under ``sources/``). Default: ``$TRAJVI_DATA_DIR`` if set,
        else ``~/.cache/trajvi``.
    download
        Whether a missing file may be built from its public sources (a download of a few MB).

    Returns
    -------
    The AnnData (raw int32 counts in a CSR ``X``), after its names, counts and labels were checked against the
    fingerprint of the reference copy.

    Raises
    ------
    FileNotFoundError
        When the file is neither at ``path`` nor in the cache folder and cannot be built (no download allowed, or
        a dataset whose sources trajvi does not convert): the message names the sources and the folder.
    OSError
        When a download fails: the message names the address and where to put the file by hand
        (:class:`PermissionError` when the cache folder cannot be written).
    ValueError
        When a file (given, cached, downloaded or built) does not match its recorded checksum or fingerprint.
"""


def _where(func: _F) -> _F:
    """Append the shared parameter text to a dataset function's docstring."""
    func.__doc__ = (func.__doc__ or "") + _WHERE
    return func


@_where
def kang_scgen_valid(
    *,
    path: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
) -> AnnData:
    """Kang et al. 2018 IFN-beta PBMC, scGen's validation split: 1,975 cells x 6,998 genes.

    ``obs``: ``condition`` (control / stimulated), ``cell_type`` (scGen's 7 labels), ``barcode``, ``n_counts_orig``,
    ``n_genes_orig``; ``var``: ``highly_variable`` (2,000) and ``hvg_dispersions_norm``. Built from scGen's
    ``data/valid.h5ad`` (theislab/scgen at commit dd7e178): the counts are recovered exactly from its log-normalised
    values (each cell's ``expm1`` divided by its smallest non-zero value, one UMI). GPL-3 (scGen); data GEO GSE96583.
    """
    return load("kang_scgen_valid_counts", path=path, cache_dir=cache_dir, download=download)


@_where
def kang_pbmc_union(
    *,
    path: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
) -> AnnData:
    """Kang et al. 2018 IFN-beta PBMC, the union of three public copies: 4,508 cells x 4,805 genes.

    ``obs``: ``condition`` (control / stimulated), ``cell_type`` (scGen's vocabulary; ``cell_type_source`` says which
    are scGen's own labels and which were transferred by a kNN vote, with ``cell_type_confidence``), ``src`` and more.
    The sources are harmony's ``pbmc_stim.RData``, scGen's ``valid.h5ad``, seuratTools' ``ifnb1k.rda`` and muscat's
    ``example_sce.rda`` (labels); three are R objects, which trajvi does not convert, so this function returns a
    copy given by ``path`` or found in the cache folder (checked against the reference fingerprint) and cannot
    build the file itself. :func:`kang_scgen_valid` is the same experiment built from its source.
    """
    return load("kang_pbmc_union_counts", path=path, cache_dir=cache_dir, download=download)


@_where
def klein2015(
    *,
    path: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
) -> AnnData:
    """Klein et al. 2015 mouse ES cells after LIF withdrawal: 1,000 cells x 900 genes, days 0, 2, 4 and 7.

    ``obs``: ``day`` (int) and ``time`` (ordered d0 < d2 < d4 < d7); ``var``: ``highly_variable`` (500) and
    ``hvg_dispersions_norm``. Built from the tmscc package's ``profile.txt`` (a genes x cells count table) and
    ``labels.txt`` (tarohi24/tmscc at commit 5e0f30f, MIT); the 900 genes are the most highly expressed ones.
    Data GEO GSE65525.
    """
    return load("klein2015_mesc_lif_counts", path=path, cache_dir=cache_dir, download=download)


@_where
def haber2017(
    *,
    path: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
) -> AnnData:
    """Haber et al. 2017 mouse small intestine, two infections: 1,566 cells x 5,632 genes.

    ``obs``: ``condition`` (Control / Hpoly.Day10 / Salmonella), ``cell_type`` (8), ``mouse``, ``pathogen``,
    ``days_post_infection``, ``src`` and more. Built from scGen's two validation files (``valid_hpoly.h5ad`` from
    tongtongtot/scPerb at commit 011b238, ``valid_salmonella.h5ad`` from tuln128/epiLegosDNN at commit 1460223):
    counts recovered exactly from the log-normalised values, cells in both files (identical counts, checked) kept
    once, genes restricted to those in both. Data GEO GSE92332.
    """
    return load("haber2017_scgen_valid_counts", path=path, cache_dir=cache_dir, download=download)


@_where
def packer2019_worm(
    *,
    path: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
) -> AnnData:
    """Packer et al. 2019 C. elegans embryo, amphid neuron lineages: 1,805 cells x 10,000 genes.

    ``obs``: ``embryo_time`` (minutes), ``embryo_time_bin``, ``cell_type``, ``fate``, ``batch`` and more. The source
    is monocle3's worm-embryo example (``inst/extdata/worm_embryo/*.rds``, cole-trapnell-lab/monocle3 at commit
    1336cc9, MIT): R objects, which trajvi does not convert, so this function returns a copy given by ``path`` or
    found in the cache folder (checked against the reference fingerprint) and cannot build the file itself.
    """
    return load("packer2019_worm_amphid_counts", path=path, cache_dir=cache_dir, download=download)
