import pandas as pd
import pytest

import trajvi
from tests.pl.test_utils import _trends
from trajvi._constants import ADATA_KEYS


def test_gene_trends_reads_the_table_stored_in_adata():
    adata = _trends()
    axs = trajvi.pl.gene_trends(adata, genes=["g2"], groups=["b"], show=False)
    assert [ax.get_title() for ax in axs] == ["g2"]
    assert len(axs[0].lines) == 1 and axs[0].get_ylabel() == "expression (log1p)"
    adata.uns["other"] = adata.uns.pop(ADATA_KEYS.TRENDS)
    assert len(trajvi.pl.gene_trends(adata, key="other", show=False)) == 3


def test_gene_trends_errors_name_the_fix():
    adata = _trends()
    table = adata.uns[ADATA_KEYS.TRENDS]["table"]
    with pytest.raises(TypeError, match=r"must be an AnnData, not DataFrame; .*key_added="):
        trajvi.pl.gene_trends(table, show=False)
    with pytest.raises(KeyError, match=r"no gene trends under uns\['missing'\]; run trajvi\.tl\.gene_trends"):
        trajvi.pl.gene_trends(adata, key="missing", show=False)
    with pytest.raises(KeyError, match=r"genes \['nope'\] are not in"):
        trajvi.pl.gene_trends(adata, genes=["nope"], show=False)
    adata.uns[ADATA_KEYS.TRENDS]["table"] = pd.DataFrame(table).drop(columns=["q25"])
    with pytest.raises(ValueError, match=r"lacks columns \['q25'\]"):
        trajvi.pl.gene_trends(adata, show=False)
