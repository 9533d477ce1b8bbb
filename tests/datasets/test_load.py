"""Finding a dataset: a given path, the cache folder, $TRAJVI_DATA_DIR; clear errors when it is wrong or missing."""

import shutil

import anndata as ad
import numpy as np
import pytest

from tests.conftest import shared_data
from trajvi import datasets
from trajvi.datasets._registry import RECORDS


def test_a_cached_copy_is_checked_and_returned_without_the_network(tmp_path, no_network):
    (tmp_path / "klein2015_mesc_lif_counts.h5ad").symlink_to(shared_data("klein2015_mesc_lif_counts.h5ad"))
    adata = datasets.klein2015(cache_dir=tmp_path)
    assert adata.shape == (1000, 900)
    assert no_network == []


def test_the_environment_variable_names_the_folder(monkeypatch, no_network):
    monkeypatch.setenv("TRAJVI_DATA_DIR", str(shared_data("kang_pbmc_union_counts.h5ad").parent))
    assert datasets.kang_pbmc_union().shape == (4508, 4805)
    assert datasets.packer2019_worm().shape == (1805, 10000)
    assert no_network == []


def test_a_given_path_is_checked(tmp_path, no_network):
    assert datasets.haber2017(path=shared_data("haber2017_scgen_valid_counts.h5ad")).n_obs == 1566
    with pytest.raises(ValueError, match="is not the haber2017_scgen_valid_counts dataset"):
        datasets.haber2017(path=shared_data("kang_scgen_valid_counts.h5ad"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        datasets.haber2017(path=tmp_path / "nothing.h5ad")


def test_a_corrupted_cached_file_is_rejected(tmp_path, no_network):
    adata = ad.read_h5ad(shared_data("klein2015_mesc_lif_counts.h5ad"))
    adata.X[0, np.flatnonzero(adata.X[0].toarray())[0]] += 1
    adata.write_h5ad(tmp_path / "klein2015_mesc_lif_counts.h5ad")
    with pytest.raises(ValueError, match=r"differs from the reference \(total_counts: found 6428042, expected 6428041"):
        datasets.klein2015(cache_dir=tmp_path)
    (tmp_path / "klein2015_mesc_lif_counts.h5ad").write_bytes(b"not an h5ad")
    with pytest.raises(ValueError, match=r"could not be read as an \.h5ad"):
        datasets.klein2015(cache_dir=tmp_path)
    assert no_network == []


def test_a_missing_file_without_network_names_the_address_and_the_folder(tmp_path, no_network):
    url = RECORDS["klein2015_mesc_lif_counts"].sources["profile"].url
    with pytest.raises(OSError, match="could not download") as error:
        datasets.klein2015(cache_dir=tmp_path)
    assert url in str(error.value)
    assert str(tmp_path) in str(error.value)
    assert no_network == [url]
    assert not list((tmp_path / "sources").iterdir())  # nothing half-written


def test_download_false_and_unbuildable_datasets_say_what_to_do(tmp_path, no_network):
    with pytest.raises(FileNotFoundError, match="download=False") as error:
        datasets.kang_scgen_valid(cache_dir=tmp_path, download=False)
    scgen = "https://raw.githubusercontent.com/theislab/scgen/dd7e178f9b42b9dfef9eb18d0da4b8e3caea4cf7/data/valid.h5ad"
    assert scgen in str(error.value)
    with pytest.raises(FileNotFoundError, match="trajvi cannot build it here") as error:
        datasets.packer2019_worm(cache_dir=tmp_path)
    assert str(tmp_path) in str(error.value)
    assert "cole-trapnell-lab/monocle3" in str(error.value)
    assert no_network == []


def test_a_download_with_the_wrong_md5_is_removed(tmp_path, served):
    record = RECORDS["klein2015_mesc_lif_counts"]
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("not the profile")
    served[record.sources["profile"].url] = wrong
    with pytest.raises(ValueError, match="not the recorded abf35ccaa19fcc45060f7b07468d1763"):
        datasets.klein2015(cache_dir=tmp_path / "cache")
    assert not list((tmp_path / "cache" / "sources").iterdir())
    shutil.rmtree(tmp_path / "cache")


def test_an_unwritable_cache_folder_is_named_before_any_download(tmp_path, no_network, monkeypatch):
    monkeypatch.setattr("trajvi.datasets._load.os.access", lambda path, mode: False)
    with pytest.raises(PermissionError, match=f"the cache folder {tmp_path} is not writable. Pass cache_dir="):
        datasets.klein2015(cache_dir=tmp_path)
    assert no_network == []


def test_download_writes_through_a_temporary_name(tmp_path):
    from trajvi.datasets._fetch import download

    source = tmp_path / "source.txt"
    source.write_bytes(b"x" * 3_000_000)
    target = tmp_path / "copy.txt"
    download(source.as_uri(), target)  # urllib reads file:// addresses as it reads https:// ones
    assert target.read_bytes() == source.read_bytes()
    assert not (tmp_path / "copy.txt.part").exists()
