import json
import subprocess
import sys

import pytest

from trajvi.cli import build_parser, main


def test_demo_writes_its_files(tmp_path, capsys):
    out = tmp_path / "demo"
    assert (
        main(["demo", "--out", str(out), "--epochs", "2", "--n-cells", "300", "--n-genes", "40", "--no-progress"]) == 0
    )
    for name in ("demo.h5ad", "latent.png", "history.png", "metrics.json"):
        assert (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["cell_type_knn_accuracy"] <= 1
    assert "results in" in capsys.readouterr().out
    import anndata as ad

    adata = ad.read_h5ad(out / "demo.h5ad")
    assert "X_trajvi" in adata.obsm and "X_trajvi" in adata.varm


def test_bad_arguments_exit_with_a_message(capsys):
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["demo", "--epochs", "zero"])
    assert info.value.code == 2
    assert "not a positive integer" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_parser().parse_args([])


def test_module_entry_point():
    result = subprocess.run([sys.executable, "-m", "trajvi", "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0
    assert "demo" in result.stdout
