"""Public single-cell count datasets used by the tutorials and benchmarks, built from their sources and cached.

Each function returns the same AnnData as the reference copy the tutorials were written on, and checks it: the
source files are pinned to a commit and checked by md5, and the built (or cached, or given) file by a fingerprint of
its names, counts and labels. Files are cached in ``cache_dir``, else ``$TRAJVI_DATA_DIR``, else ``~/.cache/trajvi``.
"""

from ._datasets import haber2017, kang_pbmc_union, kang_scgen_valid, klein2015, packer2019_worm
from ._fingerprint import fingerprint

__all__ = ["fingerprint", "haber2017", "kang_pbmc_union", "kang_scgen_valid", "klein2015", "packer2019_worm"]
