import anndata as ad
import numpy as np
import pandas as pd
import pytest

import trajvi
from trajvi._constants import ADATA_KEYS


def test_gene_trends_writes_its_table_into_uns(trained):
    adata, model = trained
    adata = adata.copy()
    genes = list(adata.var_names[:2])
    before = set(adata.uns)
    assert trajvi.tl.gene_trends(adata, model, genes, groupby="cell_type", n_steps=6) is None
    assert set(adata.uns) - before == {ADATA_KEYS.TRENDS}
    stored = adata.uns[ADATA_KEYS.TRENDS]
    df = stored["table"]
    assert isinstance(df, pd.DataFrame)
    assert list(df.columns) == ["time", "gene", "group", "mean", "std", "q25", "q75", "n_cells"]
    assert set(df["gene"]) == set(genes)
    assert set(df["group"]) == set(adata.obs.loc[adata.obs["condition"] == "control", "cell_type"].astype(str))
    assert len(df) == 7 * 2 * df["group"].nunique()
    assert (df["q25"] <= df["q75"]).all()
    params = stored["params"]
    assert params["genes"] == genes and params["groupby"] == "cell_type" and params["scale"] == "log1p"
    assert params["source"] == "control" and params["target"] == "stimulated"


def test_gene_trends_copy_leaves_adata_alone(trained):
    adata, model = trained
    before = set(adata.uns)
    out = trajvi.tl.gene_trends(adata, model, ["gene_0"], n_steps=3, key_added="trends", copy=True)
    assert isinstance(out, ad.AnnData) and out is not adata
    assert set(adata.uns) == before
    assert out.uns["trends"]["params"]["genes"] == ["gene_0"]
    assert out.uns["trends"]["params"]["groupby"] == ""  # None is not h5ad-writable


def test_gene_trends_errors_before_writing(trained):
    adata, model = trained
    before = set(adata.uns)
    with pytest.raises(KeyError, match="genes not in"):
        trajvi.tl.gene_trends(adata, model, ["not_a_gene"])
    with pytest.raises(KeyError, match="groupby"):
        trajvi.tl.gene_trends(adata, model, ["gene_0"], groupby="nope")
    assert set(adata.uns) == before


def test_gene_trends_survive_h5ad_and_plot_from_the_file(trained, tmp_path):
    adata, model = trained
    out = trajvi.tl.gene_trends(adata, model, ["gene_0", "gene_1"], n_steps=4, copy=True)
    out.obsm.clear()  # only the stored trends are under test here
    out.write_h5ad(tmp_path / "trends.h5ad")
    back = ad.read_h5ad(tmp_path / "trends.h5ad")
    table, read = out.uns[ADATA_KEYS.TRENDS]["table"], back.uns[ADATA_KEYS.TRENDS]["table"]
    pd.testing.assert_frame_equal(read.reset_index(drop=True), table, check_dtype=False, check_index_type=False)
    assert list(back.uns[ADATA_KEYS.TRENDS]["params"]["genes"]) == ["gene_0", "gene_1"]
    axs = trajvi.pl.gene_trends(back, show=False)
    assert [ax.get_title() for ax in axs] == ["gene_0", "gene_1"]
    np.testing.assert_allclose(axs[0].lines[0].get_ydata(), table.loc[table["gene"] == "gene_0", "mean"])
