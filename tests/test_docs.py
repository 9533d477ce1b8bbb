"""The documentation builds with warnings as errors (API pages from the docstrings, tutorials with stored outputs)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NEEDED = ("sphinx", "myst_nb", "sphinx_book_theme", "sphinx_autodoc_typehints")


def test_docs_build_without_warnings(tmp_path):
    missing = [name for name in NEEDED if importlib.util.find_spec(name) is None]
    if missing:
        reason = f"the docs need {missing}: pip install -e '.[test]' (or '.[doc]')."
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    # Offline: intersphinx would warn for every inventory it cannot fetch (docs/conf.py). The notebooks are not
    # executed (nb_execution_mode = "off"): their stored outputs are rendered.
    env = {**os.environ, "TRAJVI_DOCS_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    # Built from a copy of docs/, tutorials/ and the top-level files (the pages include ../CHANGELOG.md and link
    # the notebooks): autosummary writes its pages into the source folder, and concurrent runs must not share one.
    repo = tmp_path / "repo"
    skip = shutil.ignore_patterns("_build", "generated", "jupyter_execute", ".ipynb_checkpoints")
    for name in ("docs", "tutorials"):
        shutil.copytree(ROOT / name, repo / name, symlinks=True, ignore=skip)
    for path in ROOT.iterdir():
        if path.is_file():
            shutil.copy2(path, repo / path.name)
    source = repo / "docs"
    out = tmp_path / "html"
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(source), str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, f"sphinx-build failed:\n{proc.stderr[-6000:]}\n{proc.stdout[-2000:]}"
    tutorials = [f"tutorials/{name}.html" for name in ("quickstart", "kang_ifnb", "klein_timecourse", "worm_fates")]
    for page in ("index.html", "api.html", "generated/trajvi.TrajVI.html", *tutorials):
        assert (out / page).is_file(), f"{page} was not built"
    model_page = (out / "generated" / "trajvi.TrajVI.html").read_text(encoding="utf-8")
    for method in ("train", "train_trajectories", "simulate_trajectory", "predict"):
        assert f'id="trajvi.TrajVI.{method}"' in model_page, f"TrajVI.{method} is not documented"
