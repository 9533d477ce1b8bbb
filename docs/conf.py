"""Sphinx configuration of the trajvi docs."""

import os
from importlib.metadata import version as _version

project = "trajvi"
author = "The trajvi developers"
copyright = "2026, the trajvi developers"
release = _version("trajvi")

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinx_autodoc_typehints",
]
templates_path = ["_templates"]
autosummary_generate = True
autodoc_member_order = "bysource"
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = True
typehints_defaults = "comma"
nb_execution_mode = "off"  # the tutorials are stored with their outputs
myst_enable_extensions = ["colon_fence", "dollarmath"]
# .rst first: autosummary writes its pages (reStructuredText) with the first suffix that Sphinx parses as rst
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "**.ipynb_checkpoints", "generated/*.md"]  # *.md: pages of older builds
intersphinx_mapping = {
    "python": ("https://docs.python.org/3", None),
    "anndata": ("https://anndata.readthedocs.io/en/stable/", None),
    "scvi": ("https://docs.scvi-tools.org/en/stable/", None),
    "torch": ("https://pytorch.org/docs/stable/", None),
}
if os.environ.get("TRAJVI_DOCS_OFFLINE"):
    # No network (tests/test_docs.py): the inventories cannot be fetched and each failure is a warning. Links
    # to other projects' objects are then left as plain text.
    extensions.remove("sphinx.ext.intersphinx")
html_theme = "sphinx_book_theme"
html_static_path = ["_static"]
html_css_files = ["trajvi.css"]  # wide tables: smaller font, horizontal scroll
html_title = "trajvi"
