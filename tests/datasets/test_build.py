"""Builders run on source files re-created from the reference copies (no network).

Klein 2015: the re-created ``profile.txt`` and ``labels.txt`` have the recorded md5 sums, so they are byte-for-byte
the published files and the build is checked end to end. scGen's Kang and Haber files are log-normalised floats that
cannot be re-created byte-for-byte: the test writes files of the same layout from the reference counts (their md5
entries replaced for the test) and checks that the build recovers the reference.
"""

import dataclasses

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from tests.conftest import shared_data
from trajvi import datasets
from trajvi.datasets._fetch import md5sum
from trajvi.datasets._registry import RECORDS


def _assert_same(built, reference):
    built = built[reference.obs_names, reference.var_names]
    assert (built.X != reference.X).nnz == 0
    pd.testing.assert_frame_equal(built.obs, reference.obs, check_names=False)
    pd.testing.assert_frame_equal(built.var, reference.var, check_names=False)


def test_klein_is_built_from_the_published_files_and_cached(tmp_path, served):
    reference = ad.read_h5ad(shared_data("klein2015_mesc_lif_counts.h5ad"))
    sources = RECORDS["klein2015_mesc_lif_counts"].sources
    profile, labels = tmp_path / "profile.txt", tmp_path / "labels.txt"
    pd.DataFrame(reference.X.toarray().T, index=reference.var_names, columns=reference.obs_names).to_csv(profile)
    labels.write_text("\n".join(map(str, reference.obs["day"])))
    assert md5sum(profile) == sources["profile"].md5
    assert md5sum(labels) == sources["labels"].md5
    served.update({sources["profile"].url: profile, sources["labels"].url: labels})

    built = datasets.klein2015(cache_dir=tmp_path / "cache")
    _assert_same(built, reference)
    assert list(built.obs_names) == list(reference.obs_names)
    assert (tmp_path / "cache" / "klein2015_mesc_lif_counts.h5ad").exists()
    served.clear()  # the second call reads the cache
    _assert_same(datasets.klein2015(cache_dir=tmp_path / "cache"), reference)


def _log_normalised(counts, size, target):
    return sparse.csr_matrix(counts.multiply(target / size[:, None]).log1p().astype(np.float32))


def _serve_as(monkeypatch, served, name, key, path):
    record = RECORDS[name]
    source = dataclasses.replace(record.sources[key], md5=md5sum(path))
    monkeypatch.setitem(RECORDS, name, dataclasses.replace(record, sources={**record.sources, key: source}))
    served[source.url] = path


def test_kang_scgen_valid_is_recovered_from_a_log_normalised_file(tmp_path, served, monkeypatch):
    reference = ad.read_h5ad(shared_data("kang_scgen_valid_counts.h5ad"))
    size = reference.obs["n_counts_orig"].to_numpy(dtype=np.float64)
    source = ad.AnnData(
        _log_normalised(reference.X, size, 1e4),
        obs=pd.DataFrame(
            {
                "condition": reference.obs["condition"].to_numpy(),
                "cell_type": reference.obs["cell_type"].to_numpy(),
                "n_counts": size.astype(np.float32),
                "n_genes": reference.obs["n_genes_orig"].to_numpy(),
            },
            index=reference.obs_names,  # scGen names its cells "<barcode>-<condition>"
        ),
        var=pd.DataFrame(index=reference.var_names),
    )
    path = tmp_path / "valid.h5ad"
    source.write_h5ad(path)
    _serve_as(monkeypatch, served, "kang_scgen_valid_counts", "scgen", path)

    built = datasets.kang_scgen_valid(cache_dir=tmp_path / "cache")
    _assert_same(built, reference)
    assert built.uns["count_reconstruction"]["max_abs_deviation_from_integer"] < 1e-3


def _haber_source(reference, cells, extra_gene, target, path, *, stale_neighbors=False):
    part = reference[cells]
    rng = np.random.default_rng(0)
    counts = sparse.hstack([part.X, sparse.csr_matrix(rng.poisson(2.0, (part.n_obs, 1)))]).tocsr()
    size = part.obs["n_counts_orig"].to_numpy(dtype=np.float64)
    source = ad.AnnData(
        _log_normalised(counts, size, target),
        obs=pd.DataFrame(
            {
                "condition": part.obs["condition"].astype(str).to_numpy(),
                "cell_label": part.obs["cell_type"].astype(str).to_numpy(),
                "batch": (part.obs["condition"] != "Control").astype(int).to_numpy(),
                "n_counts": size,
                "n_genes": part.obs["n_genes_orig"].to_numpy(),
            },
            index=part.obs_names,
        ),
        var=pd.DataFrame(index=[*reference.var_names, extra_gene]),
    )
    source.write_h5ad(path)
    if stale_neighbors:  # a group anndata cannot read back, like the one in the published salmonella file
        with h5py.File(path, "r+") as handle:
            handle.create_group("uns/neighbors").attrs["encoding-type"] = "no-such-encoding"


def test_haber_merges_the_two_recovered_files(tmp_path, served, monkeypatch):
    reference = ad.read_h5ad(shared_data("haber2017_scgen_valid_counts.h5ad"))
    hpoly, salmonella = tmp_path / "valid_hpoly.h5ad", tmp_path / "valid_salmonella.h5ad"
    _haber_source(reference, reference.obs["in_hpoly_valid"].to_numpy(), "OnlyInHpoly", 5218.0, hpoly)
    salmonella_cells = reference.obs["in_salmonella_valid"].to_numpy()
    _haber_source(reference, salmonella_cells, "OnlyInSalmonella", 4834.5, salmonella, stale_neighbors=True)
    with pytest.raises(Exception, match=r"no-such-encoding|neighbors|encoding"):
        ad.read_h5ad(salmonella)
    _serve_as(monkeypatch, served, "haber2017_scgen_valid_counts", "hpoly_valid", hpoly)
    _serve_as(monkeypatch, served, "haber2017_scgen_valid_counts", "salmonella_valid", salmonella)

    built = datasets.haber2017(cache_dir=tmp_path / "cache")
    _assert_same(built[:, reference.var_names], reference)
    assert built.obs["src"].value_counts().to_dict() == {"hpoly_valid": 815, "salmonella_valid": 674, "both": 77}
