import math

import pytest
import torch

from trajvi._constants import REGISTRY_KEYS
from trajvi.module import GeneAttentionDecoder, TrajVIModule


def _batch(n=16, g=30, n_batch=2, n_cond=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return {
        REGISTRY_KEYS.X_KEY: torch.poisson(torch.full((n, g), 2.0), generator=gen),
        REGISTRY_KEYS.BATCH_KEY: torch.randint(n_batch, (n, 1), generator=gen),
        REGISTRY_KEYS.CONDITION_KEY: torch.randint(n_cond, (n, 1), generator=gen).float(),
    }


def test_decoder_attention_shapes_and_init():
    torch.manual_seed(0)
    dec = GeneAttentionDecoder(5, 40, n_hidden=16, n_attention=8)
    bound = math.sqrt(6.0 / (40 + 16))
    assert dec.gene_embeddings.shape == (40, 16)
    assert dec.gene_embeddings.abs().max() <= bound
    assert dec.keys().std().item() == pytest.approx(1.0, rel=1e-4)
    z = torch.randn(7, 5)
    b = torch.zeros(7, 1, dtype=torch.long)
    scale = dec(z, b)
    assert scale.shape == (7, 40)
    torch.testing.assert_close(scale.sum(-1), torch.ones(7))
    # the scores are Q K^T / sqrt(d_k) with d_k = Q.shape[-1]
    h = dec.body(z, b)
    q = dec.query(h)
    expected = torch.softmax(q @ dec.keys().T / math.sqrt(q.shape[-1]), dim=-1)
    torch.testing.assert_close(scale, expected)
    genes = torch.tensor([3, 1])
    torch.testing.assert_close(dec(z, b, genes=genes), scale[:, genes])


def test_decoder_needs_condition_when_built_with_one():
    dec = GeneAttentionDecoder(5, 10, n_condition_embed=4)
    with pytest.raises(ValueError, match="condition embedding"):
        dec(torch.randn(3, 5), torch.zeros(3, 1, dtype=torch.long))


def test_forward_loss_and_gradients_reach_gene_embeddings():
    torch.manual_seed(0)
    module = TrajVIModule(30, n_batch=2, n_conditions=2, n_latent=4, n_hidden=16, n_attention=8)
    _, gen, out = module(_batch())
    assert torch.isfinite(out.loss)
    assert out.reconstruction_loss["reconstruction_loss"].shape == (16,)
    assert int(out.extra_metrics["n_repaired"]) == 0
    out.loss.backward()
    grad = module.decoder.gene_embeddings.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert gen["px"].mean.shape == (16, 30)


def test_parameter_groups_are_disjoint_and_complete():
    module = TrajVIModule(30, n_latent=4, n_hidden=16)
    vae = {id(p) for p in module.vae_parameters()}
    disc = {id(p) for p in module.discriminator_parameters()}
    velocity = {id(p) for p in module.velocity_parameters()}
    assert not vae & disc and not vae & velocity and not disc & velocity
    assert vae | disc | velocity == {id(p) for p in module.parameters()}


def test_counterfactual_decoding_and_samples():
    torch.manual_seed(0)
    module = TrajVIModule(30, n_latent=4, n_hidden=16, decode_condition=True)
    module.eval()
    batch = _batch()
    inf = module.inference(batch[REGISTRY_KEYS.X_KEY], batch[REGISTRY_KEYS.BATCH_KEY])
    args = (inf["qzm"], inf["library"], batch[REGISTRY_KEYS.BATCH_KEY], batch[REGISTRY_KEYS.CONDITION_KEY])
    a = module.generative(*args, transform_condition=0)["px_scale"]
    b = module.generative(*args, transform_condition=1)["px_scale"]
    assert not torch.allclose(a, b)
    inf3 = module.inference(batch[REGISTRY_KEYS.X_KEY], batch[REGISTRY_KEYS.BATCH_KEY], n_samples=3)
    out3 = module.generative(
        inf3["z"], inf3["library"], batch[REGISTRY_KEYS.BATCH_KEY], batch[REGISTRY_KEYS.CONDITION_KEY]
    )
    assert out3["px_scale"].shape == (3, 16, 30)
    assert module.sample(batch, n_samples=2).shape == (16, 30, 2)


def test_extreme_counts_give_finite_loss():
    module = TrajVIModule(30, n_latent=4, n_hidden=16)
    batch = _batch()
    batch[REGISTRY_KEYS.X_KEY][0] = 1e6
    batch[REGISTRY_KEYS.X_KEY][1] = 0
    _, _, out = module(batch)
    assert torch.isfinite(out.loss)
