import json
import subprocess
import sys

import numpy as np
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
    assert "results in" in capsys.readouterr().out.strip().splitlines()[-1]
    assert (out / "model" / "model.pt").exists()
    import anndata as ad

    adata = ad.read_h5ad(out / "demo.h5ad")
    assert "X_trajvi" in adata.obsm and "X_trajvi" in adata.varm and "trajvi" in adata.obsm
    assert metrics["energy_distance_predicted_to_stimulated"] >= 0


def test_fit_runs_both_phases_and_writes(tmp_path, capsys):
    import anndata as ad

    import trajvi

    data = trajvi.data.synthetic(300, 40, seed=1)
    data.layers["counts"] = data.X.copy()
    path = tmp_path / "in.h5ad"
    data.write_h5ad(path)
    out = tmp_path / "res" / "out.h5ad"
    argv = [
        "fit",
        str(path),
        "--condition-key",
        "condition",
        "--path",
        "control",
        "stimulated",
        "--layer",
        "counts",
        "--batch-key",
        "batch",
        "--couple-within",
        "cell_type",
        "--epochs",
        "2",
        "--flow-epochs",
        "2",
        "--out",
        str(out),
        "--save-model",
        str(tmp_path / "model"),
        "--no-progress",
    ]
    assert main(argv) == 0
    result = ad.read_h5ad(out)
    assert "X_trajvi" in result.obsm and "trajvi" in result.obsm
    predicted = ad.read_h5ad(tmp_path / "res" / "out_predicted.h5ad")
    assert predicted.n_obs == (data.obs["condition"] == "control").sum()
    assert (tmp_path / "model" / "model.pt").exists()
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("trajvi fit: model in ") and str(tmp_path / "model") in last and str(out) in last


def test_fit_takes_several_paths_into_one_model(tmp_path):
    import anndata as ad

    import trajvi

    data = trajvi.data.synthetic(400, 30, kind="perturbations", n_perturbations=2, combinations=(), seed=2)
    path = tmp_path / "panel.h5ad"
    data.write_h5ad(path)
    out = tmp_path / "out.h5ad"
    argv = ["fit", str(path), "--condition-key", "condition", "--dose-key", "dose", "--path", "control", "P0"]
    argv += ["--path", "control", "P1", "--epochs", "1", "--flow-epochs", "1", "--out", str(out), "--no-progress"]
    argv += ["--threads", "1", "--n-latent", "3", "--batch-size", "64", "--residual-penalty", "1"]
    argv += ["--accelerator", "cpu", "--predict-mode", "transfer", "--calibrate"]
    assert main(argv) == 0
    assert (tmp_path / "out_model" / "model.pt").exists()  # the model's default folder
    predicted = ad.read_h5ad(tmp_path / "out_predicted.h5ad")
    n_control = int((data.obs["condition"] == "control").sum())
    assert predicted.n_obs == 2 * n_control
    assert predicted.obs_names.is_unique  # each path's cells named apart
    assert predicted.obs["condition"].value_counts().to_dict() == {"P0": n_control, "P1": n_control}
    assert predicted.uns["trajvi_predict"]["params"]["mode"] == "transfer"
    assert predicted.uns["trajvi_predict"]["params"]["calibrated_on"] == ["all x P0"]  # the first path's
    assert not np.allclose(predicted.X.toarray(), np.round(predicted.X.toarray()))  # moved, not sampled, counts


def test_fit_averages_several_fits(tmp_path, capsys):
    import anndata as ad

    import trajvi

    data = trajvi.data.synthetic(300, 30, n_cell_types=2, seed=3)
    path = tmp_path / "in.h5ad"
    data.write_h5ad(path)
    out = tmp_path / "out.h5ad"
    argv = ["fit", str(path), "--condition-key", "condition", "--path", "control", "stimulated", "--out", str(out)]
    argv += ["--couple-within", "cell_type", "--epochs", "2", "--flow-epochs", "2", "--n-latent", "3"]
    argv += ["--residual-penalty", "1", "--calibrate", "--seed", "4", "--n-fits", "2", "--no-progress"]
    assert main(argv) == 0
    assert "2 models in" in capsys.readouterr().out.strip().splitlines()[-1]
    predicted = ad.read_h5ad(tmp_path / "out_predicted.h5ad")
    params = predicted.uns["trajvi_predict"]["params"]
    assert params["n_models"] == 2 and params["mode"] == "transfer" and len(params["calibration_rules"]) == 2
    # the saved fits (seeds 4 and 5) averaged again give the written cells
    written = ad.read_h5ad(out)
    models = [trajvi.TrajVI.load(str(tmp_path / "out_model" / f"seed_{s}"), adata=written) for s in (4, 5)]
    again = trajvi.predict_ensemble(models, written, source="control", target="stimulated", calibrate=True)
    assert not np.allclose(models[0].get_latent_representation(), models[1].get_latent_representation())
    np.testing.assert_allclose(predicted.X.toarray(), again.X.toarray(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(written.obsm["X_trajvi"], models[0].get_latent_representation(), atol=1e-5)
    # sampled cells cannot be averaged: refused before reading the input or training
    assert main([*argv, "--predict-mode", "sample", "--out", str(tmp_path / "o2.h5ad")]) == 2
    assert "--predict-mode transfer" in _error_line(capsys)
    assert not (tmp_path / "o2_model").exists()


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_fit_reports_bad_input(tmp_path, capsys):
    import trajvi

    path = tmp_path / "in.h5ad"
    trajvi.data.synthetic(100, 20).write_h5ad(path)
    base = ["fit", str(path), "--out", str(tmp_path / "o.h5ad"), "--epochs", "1", "--flow-epochs", "1", "--no-progress"]
    assert main([*base, "--condition-key", "cond", "--path", "a", "b"]) == 2
    assert "condition_key='cond'" in _error_line(capsys)
    assert main([*base, "--condition-key", "condition", "--path", "control", "treated"]) == 2
    assert "not a condition" in _error_line(capsys)
    assert main(["fit", str(tmp_path / "missing.h5ad"), "--condition-key", "c", "--path", "a", "b", "--out", "x"]) == 2
    assert "does not exist" in _error_line(capsys)
    assert not (tmp_path / "o_model").exists()  # nothing written when the fit did not happen


def test_unreadable_inputs_and_outputs_fail_in_one_line_before_training(tmp_path, capsys):
    import trajvi

    good = tmp_path / "in.h5ad"
    trajvi.data.synthetic(60, 10).write_h5ad(good)
    text = tmp_path / "counts.csv"
    text.write_text("cell,gene\n1,2\n")
    corrupt = tmp_path / "corrupt.h5ad"
    corrupt.write_bytes(good.read_bytes()[:2000])
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    args = ["--condition-key", "condition", "--path", "control", "stimulated", "--no-progress"]
    cases = [
        (text, tmp_path / "o.h5ad", "not an h5ad file"),
        (corrupt, tmp_path / "o.h5ad", "cannot read"),
        (good, blocker / "o.h5ad", "is not a folder"),
        (good, tmp_path, "is a folder"),
    ]
    for source, out, expected in cases:
        assert main(["fit", str(source), *args, "--out", str(out)]) == 2
        line = _error_line(capsys)
        assert line.startswith("trajvi fit: error:") and expected in line, line
    # an unwritable model folder is found before training too
    assert main(["fit", str(good), *args, "--out", str(tmp_path / "o.h5ad"), "--save-model", str(blocker / "m")]) == 2
    assert "model" in _error_line(capsys)


def test_help_and_version_do_not_import_torch():
    code = (
        "import sys\nfrom trajvi.cli import main\n"
        "for argv in (['--version'], ['--help'], ['fit', '--help']):\n"
        "    try:\n        main(argv)\n    except SystemExit as stop:\n        assert stop.code == 0\n"
        "heavy = [m for m in ('torch', 'scvi', 'anndata', 'lightning') if m in sys.modules]\n"
        "print('heavy:', heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "heavy: []" in result.stdout
    assert result.stdout.startswith("trajvi ")
    for option in ("--threads", "--accelerator", "--batch-size", "--n-latent", "--residual-penalty"):
        assert option in result.stdout


def test_bad_arguments_exit_with_a_message(capsys):
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["demo", "--epochs", "zero"])
    assert info.value.code == 2
    assert "not a positive integer" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_parser().parse_args([])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["demo", "--residual-penalty", "-1"])
    assert "'auto' nor a finite number" in capsys.readouterr().err


def test_module_entry_point():
    result = subprocess.run([sys.executable, "-m", "trajvi", "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0
    assert "demo" in result.stdout
