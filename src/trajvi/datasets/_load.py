"""Find a dataset (a given path, the cache folder, or built from its sources), check its fingerprint, return it."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import anndata as ad

from trajvi._logging import logger

from ._build import BUILDERS
from ._fetch import DATA_DIR_ENV, cache_folder, fetch
from ._fingerprint import fingerprint, fingerprint_differences
from ._registry import RECORDS

if TYPE_CHECKING:
    from anndata import AnnData

    from ._registry import Record


def _read_checked(path: Path, record: Record, *, what: str) -> AnnData:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            adata = ad.read_h5ad(path)
    except Exception as error:  # h5py, OSError, anndata's own: any of them means an unreadable file
        msg = f"{what} {path} could not be read as an .h5ad ({type(error).__name__}: {error}). Delete it to rebuild."
        raise ValueError(msg) from error
    differences = fingerprint_differences(fingerprint(adata, record.label_keys), record.fingerprint)
    if differences:
        msg = (
            f"{what} {path} is not the {record.name} dataset: its content differs from the reference "
            f"({'; '.join(differences)}). Delete it (it is rebuilt from the sources) or pass the right file."
        )
        raise ValueError(msg)
    return adata


def _check_writable(folder: Path) -> None:
    """Raise a :class:`PermissionError` naming the folder when a built file could not be written there."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        msg = f"the cache folder {folder} cannot be created ({error}). Pass cache_dir= a folder you can write to."
        raise PermissionError(msg) from error
    if not os.access(folder, os.W_OK):
        msg = f"the cache folder {folder} is not writable. Pass cache_dir= a folder you can write to."
        raise PermissionError(msg)


def _sources_text(record: Record) -> str:
    return ", ".join(source.url for source in record.sources.values())


def load(
    name: str,
    *,
    path: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
) -> AnnData:
    """Return the dataset ``name``: from ``path``, else the cache folder, else built from its public sources.

    Whatever the origin, the AnnData's content (names, counts, labels) is checked against the fingerprint of the
    reference copy before it is returned; a built file is written to the cache folder only after that check.
    """
    record = RECORDS[name]
    if path is not None:
        path = Path(path).expanduser()
        if not path.exists():
            msg = f"path={str(path)!r} does not exist. Pass an existing {record.filename} or leave path unset."
            raise FileNotFoundError(msg)
        return _read_checked(path, record, what="path=")
    folder = cache_folder(cache_dir)
    target = folder / record.filename
    if target.exists():
        logger.info(f"reading {record.name} from {target}")
        return _read_checked(target, record, what="the cached file")
    where = f"{folder} (cache_dir=, else ${DATA_DIR_ENV}, else ~/.cache/trajvi)"
    if record.not_buildable is not None:
        msg = (
            f"{record.filename} is not in {where}, and trajvi cannot build it here: {record.not_buildable}. "
            f"It is made from {_sources_text(record)}. Put a copy of {record.filename} in that folder or pass path=."
        )
        raise FileNotFoundError(msg)
    if not download:
        msg = (
            f"{record.filename} is not in {where} and download=False. Allow the download (from "
            f"{_sources_text(record)}), or put the file in that folder, or pass path=."
        )
        raise FileNotFoundError(msg)
    _check_writable(folder)
    files = {key: fetch(source, folder) for key, source in record.sources.items()}
    adata = BUILDERS[name](files, record)
    differences = fingerprint_differences(fingerprint(adata, record.label_keys), record.fingerprint)
    if differences:
        msg = (
            f"{record.filename} built from {_sources_text(record)} differs from the reference "
            f"({'; '.join(differences)}); nothing was written to {folder}. Please report this with the versions "
            "of anndata and scanpy."
        )
        raise ValueError(msg)
    partial = target.with_name(target.name + ".part")
    adata.write_h5ad(partial, compression="gzip")
    partial.replace(target)
    logger.info(f"wrote {record.name} ({adata.n_obs} cells x {adata.n_vars} genes) to {target}")
    return adata
