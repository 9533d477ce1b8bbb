import torch

from trajvi.trajectory import ot_device as _ot_device


def test_auto_uses_the_gpu_only_when_the_model_is_on_one():
    assert _ot_device("auto", torch.device("cpu")) is None
    assert _ot_device("auto", torch.device("cuda", 0)) == "cuda:0"
    assert _ot_device(None, torch.device("cuda", 0)) is None
    assert _ot_device("cpu", torch.device("cpu")) == "cpu"
