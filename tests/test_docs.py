"""The documentation builds with warnings as errors (API pages from the docstrings, tutorials with stored outputs)."""

from __future__ import annotations

import importlib.util
import os
import re
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
    pages = ("index.html", "api.html", "installation.html", "references.html", "generated/trajvi.TrajVI.html")
    for page in (*pages, "generated/trajvi.datasets.klein2015.html", *tutorials):
        assert (out / page).is_file(), f"{page} was not built"
    index = (out / "index.html").read_text(encoding="utf-8")
    assert 'href="installation.html"' in index
    assert 'href="references.html"' in index
    assert "_static/trajvi.css" in index, "the wide-table stylesheet is not linked"
    assert (out / "_static" / "trajvi.css").is_file()
    model_page = (out / "generated" / "trajvi.TrajVI.html").read_text(encoding="utf-8")
    for method in ("train", "train_trajectories", "simulate_trajectory", "predict"):
        assert f'id="trajvi.TrajVI.{method}"' in model_page, f"TrajVI.{method} is not documented"
    examples = re.sub(r"<[^>]+>", "", model_page[model_page.index("Examples") :])  # the code without its highlighting
    for call in ("model.train(", "model.train_trajectories(", "model.simulate_trajectory(", "model.predict("):
        assert call in examples, f"the class page example does not show {call}"


#: words about how the work was organised, not about the project; the docs speak of the project and its users
_PROCESS_WORDS = ("this session", "the team", "ticket", "we were told", "landed", "this work", "lease")


def test_the_docs_speak_of_the_project_not_of_how_it_was_made():
    pages = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
    found = [
        f"{page.name}:{number}: {word!r}"
        for page in pages
        if page.name != "changelog.md"
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1)
        for word in _PROCESS_WORDS
        if re.search(rf"\b{word}\b", line.lower())
    ]
    assert not found, "\n".join(found)


def test_citation_and_readthedocs_files_are_complete():
    yaml = pytest.importorskip("yaml")
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    assert citation["cff-version"] == "1.2.0"
    assert citation["authors"] == [{"name": "The trajvi developers"}]
    assert citation["version"] == _project_version()
    rtd = yaml.safe_load((ROOT / ".readthedocs.yaml").read_text(encoding="utf-8"))
    assert rtd["version"] == 2
    assert rtd["build"]["tools"]["python"] == "3.11"
    assert rtd["sphinx"]["configuration"] == "docs/conf.py"
    assert any("download.pytorch.org/whl/cpu" in step for step in rtd["build"]["jobs"]["pre_install"])
    assert rtd["python"]["install"][0]["extra_requirements"] == ["doc"]


def _project_version() -> str:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
