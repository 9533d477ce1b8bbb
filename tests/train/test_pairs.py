import numpy as np
import pytest
import torch

from trajvi.train import PairDataModule, Segment, draw_pairs
from trajvi.train._pairs import PairBatches
from trajvi.transport import couple_sets


def _segments(n=300, d=3, seed=0):
    rng = np.random.default_rng(seed)
    segments = []
    for k, (t0, t1) in enumerate([(0.0, 1.0), (1.0, 2.0)]):
        zs = rng.normal(size=(n, d)).astype(np.float32)
        zt = (zs + 3.0 + k).astype(np.float32)
        segments.append(Segment(f"s{k}", zs, zt, t0, t1, couple_sets(zs, zt, batch_size=128, rng=seed)))
    return segments


def test_pair_batches_slice_in_order_and_keep_the_remainder():
    x = torch.arange(10).reshape(10, 1)
    y = torch.arange(10) * 2
    batches = PairBatches((x, y), 4)
    assert len(batches) == 3
    assert [b[0].shape[0] for b in batches] == [4, 4, 2]
    torch.testing.assert_close(torch.cat([b[1] for b in batches]), y)
    with pytest.raises(IndexError):
        batches[3]
    with pytest.raises(ValueError, match="batch_size"):
        PairBatches((x,), 0)


def test_pair_loader_serves_every_drawn_pair_once_in_minibatches_mixing_segments():
    data = PairDataModule(_segments(), pairs_per_epoch=1000, batch_size=256, seed=1)
    batches = list(data.train_dataloader())
    assert [b[0].shape for b in batches] == [(256, 3)] * 3 + [(232, 3)]
    z0, z1, t0, t1, tau, w = (torch.cat(parts) for parts in zip(*batches))
    assert w.shape == (1000, 0)  # unconditional segments
    assert z0.dtype == z1.dtype == t0.dtype == t1.dtype == tau.dtype == torch.float32
    assert tau.shape == (1000, 1) and tau.min() >= 0 and tau.max() < 1 and tau.std() > 0.2
    assert len(z0) == 1000 and set(t0.tolist()) == {0.0, 1.0}
    # each pair keeps its own segment's times, and the two segments are mixed within a minibatch
    torch.testing.assert_close(t1 - t0, torch.ones(1000))
    assert set(batches[0][2].tolist()) == {0.0, 1.0}


def test_pairs_carry_their_path_s_weights_times_the_target_dose():
    segments = _segments()
    segments[0].weights, segments[1].weights = np.array([1.0, 0.0]), np.array([1.0, 1.0])  # "A", then "A+B"
    segments[1].dose_target = np.linspace(0.0, 2.0, len(segments[1].z_target))
    *_, t0, _, w = draw_pairs(segments, 2000, np.random.default_rng(0))
    first = t0 == 0.0
    torch.testing.assert_close(w[first], torch.tensor([[1.0, 0.0]]).expand(int(first.sum()), 2))
    second = w[~first]
    torch.testing.assert_close(second[:, 0], second[:, 1])
    assert float(second.min()) >= 0.0 and float(second.max()) <= 2.0 and float(second.std()) > 0.3
    segments[0].weights = np.array([1.0])
    with pytest.raises(ValueError, match="different lengths"):
        draw_pairs(segments, 10, np.random.default_rng(0))


def test_pair_loader_is_reproducible_and_redraws_each_epoch():
    first = [torch.cat(p) for p in zip(*PairDataModule(_segments(), pairs_per_epoch=500, seed=3).train_dataloader())]
    data = PairDataModule(_segments(), pairs_per_epoch=500, seed=3)
    again = [torch.cat(p) for p in zip(*data.train_dataloader())]
    for a, b in zip(first, again, strict=True):
        torch.testing.assert_close(a, b)
    redrawn = torch.cat([b[0] for b in data.train_dataloader()])
    assert not torch.equal(redrawn, again[0])
