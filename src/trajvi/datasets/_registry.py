"""Where each dataset comes from (repository, commit, path, md5) and the fingerprint of the reference copy."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Source:
    """One public file a dataset is built from, pinned to a commit and checked by its md5.

    ``md5`` is the full digest, or its first 8 hex digits where only those are recorded (the R sources of the Kang
    union, which trajvi does not download).
    """

    repo: str
    commit: str
    path: str
    md5: str

    @property
    def url(self) -> str:
        """The raw.githubusercontent.com address of the file at its commit."""
        return f"https://raw.githubusercontent.com/{self.repo}/{self.commit}/{self.path}"

    @property
    def filename(self) -> str:
        """The name the downloaded file is stored under in the cache (repository and commit prefixed)."""
        owner, name = self.repo.split("/")
        return f"{owner}+{name}@{self.commit[:12]}+{self.path.replace('/', '+')}"


@dataclass(frozen=True)
class Record:
    """A dataset: its file name, sources, the labels its fingerprint covers and the fingerprint itself."""

    name: str
    sources: dict[str, Source]
    label_keys: tuple[str, ...]
    fingerprint: dict[str, Any]
    #: why the file cannot be built from its sources here (None: it can)
    not_buildable: str | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def filename(self) -> str:
        """The ``.h5ad`` file name, the same as in the reference data folder."""
        return f"{self.name}.h5ad"


_R_OBJECTS = (
    "its sources are R objects (.RData / .rda / .rds: dgCMatrix, Seurat and SingleCellExperiment objects) that "
    "trajvi does not convert"
)

RECORDS: dict[str, Record] = {
    "kang_scgen_valid_counts": Record(
        name="kang_scgen_valid_counts",
        sources={
            "scgen": Source(
                "theislab/scgen",
                "dd7e178f9b42b9dfef9eb18d0da4b8e3caea4cf7",
                "data/valid.h5ad",
                "f94ad1a86ca2719782382818ca96eaa4",
            ),
        },
        label_keys=("condition", "cell_type"),
        fingerprint={
            "shape": [1975, 6998],
            "nnz": 643449,
            "total_counts": 2156428,
            "obs_names_md5": "1e351ad74d629962b35b1bda37b712ed",
            "var_names_md5": "c50e9765ed7a0c03c98fe2e57ebdcad6",
            "x_md5": "eb1fc8a855e6e77b56b785af012e6023",
            "labels_md5": {
                "condition": "5529aeb8086d793fe1ae7f9891f57fd0",
                "cell_type": "c63d56d274b284cb5ef562a3b492939f",
            },
        },
    ),
    "kang_pbmc_union_counts": Record(
        name="kang_pbmc_union_counts",
        sources={
            "harmony": Source(
                "immunogenomics/harmony",
                "df19af23ae0639bd6ea2da63898f973f08c85862",
                "data/pbmc_stim.RData",
                "57ef1f51",
            ),
            "scgen": Source(
                "theislab/scgen",
                "dd7e178f9b42b9dfef9eb18d0da4b8e3caea4cf7",
                "data/valid.h5ad",
                "f94ad1a86ca2719782382818ca96eaa4",
            ),
            "ifnb1k": Source(
                "hjames1/seuratTools",
                "43d0893cfd743194b6913a946563a8d42e22c2bb",
                "data/ifnb1k.rda",
                "c79c2a4d",
            ),
            "muscat": Source(
                "HelenaLC/muscat",
                "017b290b414212c357e184d17edcca27f4302ace",
                "data/example_sce.rda",
                "26c024a866babd94ddcb545eefcfa5df",
            ),
        },
        label_keys=("condition", "cell_type"),
        fingerprint={
            "shape": [4508, 4805],
            "nnz": 1289358,
            "total_counts": 4224827,
            "obs_names_md5": "ccdaa293af558ad42bfa7d2d01d7e829",
            "var_names_md5": "fd627993e99c6770959097865e82c3de",
            "x_md5": "872dca4fc86e3f345a4a51eb5bf00a30",
            "labels_md5": {
                "condition": "54ba19d975558cde047d803aa299dafa",
                "cell_type": "b662868fa3644651fb63a914ad276b29",
            },
        },
        not_buildable=_R_OBJECTS,
    ),
    "klein2015_mesc_lif_counts": Record(
        name="klein2015_mesc_lif_counts",
        sources={
            "profile": Source(
                "tarohi24/tmscc",
                "5e0f30fd009fe827ac2263f369c099a5bbc91a48",
                "tmscc/data/klein/profile.txt",
                "abf35ccaa19fcc45060f7b07468d1763",
            ),
            "labels": Source(
                "tarohi24/tmscc",
                "5e0f30fd009fe827ac2263f369c099a5bbc91a48",
                "tmscc/data/klein/labels.txt",
                "02873234634045a8e9cea9dd60cb1fbc",
            ),
        },
        label_keys=("day",),
        fingerprint={
            "shape": [1000, 900],
            "nnz": 732252,
            "total_counts": 6428041,
            "obs_names_md5": "fa4bae7529eb63c4fccead2a39f17990",
            "var_names_md5": "9f427b9556d44284a82ef4b0060f4292",
            "x_md5": "65812195be4bcfd9bbfe3603e081cc20",
            "labels_md5": {"day": "2a95dd4a40584e0f36536d71db1ecd60"},
        },
    ),
    "haber2017_scgen_valid_counts": Record(
        name="haber2017_scgen_valid_counts",
        sources={
            "hpoly_valid": Source(
                "tongtongtot/scPerb",
                "011b238b07a6f9a236479d34fc5f8995ac10765b",
                "data/valid_hpoly.h5ad",
                "6d51e7f3461ce875d810438d63424ce0",
            ),
            "salmonella_valid": Source(
                "tuln128/epiLegosDNN",
                "146022322095125a808aca4d32a5e36a9fa39012",
                "valid_salmonella.h5ad",
                "3c9078bef65f0d26df33949a4613da44",
            ),
        },
        label_keys=("condition", "cell_type", "mouse"),
        fingerprint={
            "shape": [1566, 5632],
            "nnz": 789590,
            "total_counts": 3585911,
            "obs_names_md5": "d4e8a7eb0f4e8f16776ee921e936435b",
            "var_names_md5": "9caae839f8202cd66acea9eb2b3ae5ab",
            "x_md5": "cdae4113cb0a0f326d5ebdab2e46488b",
            "labels_md5": {
                "condition": "9939ec09a4ccd427f74b301b741faec6",
                "cell_type": "d47c55191c64dfdc5abbb7e6976bf6f8",
                "mouse": "22237b6f2efc6191461ab4ea1d3e6681",
            },
        },
    ),
    "packer2019_worm_amphid_counts": Record(
        name="packer2019_worm_amphid_counts",
        sources={
            key: Source(
                "cole-trapnell-lab/monocle3",
                "1336cc97d053d46322148947a3375e2beb2f8652",
                f"inst/extdata/worm_embryo/worm_embryo_{key}.rds",
                md5,
            )
            for key, md5 in (
                ("expression_matrix", "cbdc98825fafdd8d88c54eaa767d2814"),
                ("coldata", "524701160c5efa3ac18679ceab9be488"),
                ("rowdata", "5c97832f3238664f6279725bd1943985"),
            )
        },
        label_keys=("embryo_time", "cell_type", "batch"),
        fingerprint={
            "shape": [1805, 10000],
            "nnz": 753299,
            "total_counts": 1248505,
            "obs_names_md5": "b4aeba05519331304f6361bf5d670486",
            "var_names_md5": "e808038aa17b9929db0e8c07270a5cc2",
            "x_md5": "9c31d4331758886ecb9847d493a6764a",
            "labels_md5": {
                "embryo_time": "a50277c1b3aedb06036e781ef4bbafc9",
                "cell_type": "a58a5486d321cf7ff9d51116224db2bf",
                "batch": "03d857c4cd5962f43fb8c464b7db7c5c",
            },
        },
        not_buildable=_R_OBJECTS,
    ),
}
