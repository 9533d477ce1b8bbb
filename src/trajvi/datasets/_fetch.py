"""The cache folder, and downloads checked by their md5."""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from trajvi._logging import logger

if TYPE_CHECKING:
    from ._registry import Source

#: environment variable naming the folder of built datasets (it wins over the default cache folder)
DATA_DIR_ENV = "TRAJVI_DATA_DIR"


def cache_folder(cache_dir: str | os.PathLike[str] | None) -> Path:
    """``cache_dir``, else ``$TRAJVI_DATA_DIR``, else ``~/.cache/trajvi``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV]).expanduser()
    return Path.home() / ".cache" / "trajvi"


def md5sum(path: Path) -> str:
    """The md5 hex digest of a file, read in 1 MiB blocks."""
    digest = hashlib.md5()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def md5_matches(path: Path, expected: str) -> bool:
    """Whether the file's md5 is ``expected`` (or starts with it, where only a prefix is recorded)."""
    return md5sum(path).startswith(expected)


def download(url: str, target: Path) -> None:
    """Write the file at ``url`` to ``target`` (through a temporary name, so a broken download leaves nothing)."""
    partial = target.with_name(target.name + ".part")
    with urllib.request.urlopen(url, timeout=60) as response, partial.open("wb") as handle:
        for block in iter(lambda: response.read(1 << 20), b""):
            handle.write(block)
    partial.replace(target)


def fetch(source: Source, folder: Path) -> Path:
    """The source file in ``folder / "sources"``, downloaded when absent, its md5 checked either way.

    Raises
    ------
    OSError
        When the download fails (no network, a moved file), naming the address and the folder to put the file in.
    ValueError
        When the file's md5 is not the recorded one (a changed or truncated file); the bad file is removed.
    """
    sources = folder / "sources"
    target = sources / source.filename
    if not target.exists():
        if not source.url.startswith("https://"):
            msg = f"refusing to download {source.url!r}: only https addresses are used."
            raise ValueError(msg)
        logger.info(f"downloading {source.url}")
        try:
            sources.mkdir(parents=True, exist_ok=True)
            download(source.url, target)
        except (urllib.error.URLError, OSError) as error:
            msg = (
                f"could not download {source.url} ({error}). Without a network, download it elsewhere and put it "
                f"at {target}, or put the built file in {folder} (or pass path= / set {DATA_DIR_ENV})."
            )
            raise OSError(msg) from error
    if not md5_matches(target, source.md5):
        found = md5sum(target)
        target.unlink()
        msg = (
            f"{source.url} was downloaded with md5 {found}, not the recorded {source.md5}: the file was removed; "
            "try again (a truncated download), or the file at that commit is not the one this dataset is built from."
        )
        raise ValueError(msg)
    return target
