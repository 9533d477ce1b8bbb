import numpy as np

import trajvi
import trajvi.model._inference as inference


def test_library_sizes_are_read_in_chunks_and_match_the_row_sums(monkeypatch):
    adata = trajvi.data.synthetic(120, 30, seed=0)
    trajvi.TrajVI.setup_anndata(adata, "condition", batch_key="batch")
    model = trajvi.TrajVI(adata, n_latent=4)
    model.is_trained_ = True  # the latent of an untrained encoder is enough here
    idx = np.array([5, 3, 100, 7, 60, 61, 0, 119, 42, 11])
    monkeypatch.setattr(inference, "_CHUNK", 3)
    z, batch, library = model._cell_inputs(adata, idx, None)
    expected = np.log(np.maximum(np.asarray(adata.X[idx].sum(axis=1)).reshape(-1, 1), 1.0))
    np.testing.assert_allclose(library.numpy(), expected, rtol=1e-6)
    assert z.shape == (10, 4) and batch.shape == (10, 1)
