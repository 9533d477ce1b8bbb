from __future__ import annotations

import logging
import os
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

for _name in ("lightning", "lightning.pytorch", "lightning.fabric", "scvi"):
    logging.getLogger(_name).setLevel(logging.ERROR)


def shared_data(name: str) -> Path:
    """Path of a file in ../shared/data; skip when absent, fail under CI."""
    path = SHARED_DATA / name
    if not path.exists():
        reason = f"{path} is not here: the real-data tests read ../shared/data beside the checkout."
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


@pytest.fixture
def trajvi_caplog(caplog):
    """caplog at INFO for the trajvi logger (this file quiets scvi-tools, whose verbosity trajvi follows)."""
    caplog.set_level(logging.INFO, logger="trajvi")
    return caplog


@pytest.fixture
def synthetic_adata():
    import trajvi

    return trajvi.data.synthetic(400, 60, seed=0)


@pytest.fixture
def seeded():
    import scvi

    old = scvi.settings.seed
    scvi.settings.seed = 0
    yield
    scvi.settings.seed = old


TRAIN_KW = {"enable_progress_bar": False, "enable_model_summary": False}
