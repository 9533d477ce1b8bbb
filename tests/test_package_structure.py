"""The package's structure: layers without upward imports or circles, and the conventions of the public tl/pl API."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

import trajvi

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "trajvi"
DESIGN = ROOT / "docs" / "design.md"


def _layers() -> dict[str, int]:
    """Top-level part of the package (``data``, ``_types``, ``cli``, ...) -> its layer, from docs/design.md."""
    text = DESIGN.read_text()
    block = re.search(r"<!-- layers -->\s*```\n(.*?)```", text, re.S)
    assert block, "docs/design.md has no layer block after <!-- layers -->"
    layers: dict[str, int] = {}
    for index, line in enumerate(block.group(1).strip().splitlines()):
        for token in line.split():
            if not (token.endswith("/") or token.endswith(".py")):
                break
            layers[token.removesuffix("/").removesuffix(".py")] = index
    return layers


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every trajvi module that ``path`` imports: at the top, inside functions and under TYPE_CHECKING."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("trajvi")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            if not target.startswith("trajvi"):
                continue
            found.add(target)
            for alias in node.names:  # `from . import data` imports a submodule
                if (PACKAGE.parent / (target + "." + alias.name).replace(".", "/")).exists():
                    found.add(f"{target}.{alias.name}")
    return found


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in PACKAGE.rglob("*.py")}


def _top(module: str) -> str:
    parts = module.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def test_the_layer_block_names_every_part_of_the_package():
    layers = _layers()
    parts = {p.name.removesuffix(".py") for p in PACKAGE.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()}
    assert parts == set(layers), (parts - set(layers), set(layers) - parts)


def test_no_import_goes_up_a_layer():
    layers = _layers()
    upward = []
    for module, targets in _graph().items():
        for target in targets:
            if target != "trajvi" and layers[_top(target)] > layers[_top(module)]:
                upward.append(f"{module} imports {target}")
    assert not upward, "\n".join(sorted(upward))


def test_no_import_circles():
    graph = {m: {t for t in targets if t != "trajvi"} for m, targets in _graph().items()}
    graph = {m: {t if t in graph else t.rsplit(".", 1)[0] for t in targets} - {m} for m, targets in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            pytest.fail("import circle: " + " -> ".join(cycle))


def test_the_checks_can_fail(tmp_path, monkeypatch):
    """An upward import written into a copy of a low layer is found (the walk sees function-level imports)."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from trajvi.model import TrajVI\n")
    monkeypatch.setattr(f"{__name__}._module_name", lambda path: "trajvi.data._bad")
    layers = _layers()
    targets = _imports(bad)
    assert "trajvi.model" in targets
    assert layers[_top("trajvi.model")] > layers[_top("trajvi.data._bad")]


# -- the public tl/pl API -------------------------------------------------------------------------------
def _public(module: object) -> list[tuple[str, object]]:
    return [(name, getattr(module, name)) for name in module.__all__ if inspect.isfunction(getattr(module, name))]


#: pl functions that read something other than an AnnData (the reason is the value).
_PLOTS_OF_OTHER_INPUTS = {"history": "draws a model's training history, which is not in an AnnData"}


def test_tl_holds_anndata_tools_only():
    """Array utilities live in trajvi.metrics; their old tl names say where they went."""
    for name, func in _public(trajvi.tl):
        assert not func.__module__.startswith("trajvi.metrics"), f"tl.{name} is an array utility: trajvi.metrics"
    for name in ("energy_distance", "expression_energy_distance", "knn_accuracy", "linear_r2", "log_normalize"):
        assert not hasattr(trajvi.tl, name)
        with pytest.raises(AttributeError, match=r"has moved: use trajvi\.metrics\."):
            getattr(trajvi.tl, name)
        new = trajvi.tl._MOVED[name].removeprefix("trajvi.metrics.")
        assert callable(getattr(trajvi.metrics, new))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        trajvi.tl.nope  # noqa: B018


@pytest.mark.parametrize(("name", "func"), _public(trajvi.tl))
def test_tl_functions_follow_the_scanpy_conventions(name, func):
    params = list(inspect.signature(func).parameters.values())
    assert params[0].name == "adata", f"tl.{name}: adata first"
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    assert len(positional) <= 3, f"tl.{name}: at most 3 positional parameters, the rest keyword-only"
    names = {p.name for p in params}
    returns = str(inspect.signature(func).return_annotation)  # a string: the modules use postponed annotations
    assert "key_added" in names, f"tl.{name}: results stored under key_added"
    assert inspect.signature(func).parameters["key_added"].default, f"tl.{name}: key_added has a default key"
    if "copy" in names:
        assert returns == "AnnData | None", f"tl.{name}: copy=True returns the copy, else None"
        assert inspect.signature(func).parameters["copy"].default is False
    else:  # a table tool: returns its table and stores it too
        assert returns == "pd.DataFrame", f"tl.{name}: copy=, or a DataFrame result"
    assert func.__doc__ and "key_added" in func.__doc__


@pytest.mark.parametrize(("name", "func"), _public(trajvi.pl))
def test_pl_functions_follow_the_scanpy_conventions(name, func):
    """The signature; tests/pl/test_utils.py runs every plot with show=False, return_fig=True and save=."""
    params = inspect.signature(func).parameters
    first = next(iter(params))
    assert first == "adata" or name in _PLOTS_OF_OTHER_INPUTS, f"pl.{name}: adata first"
    for option, default in (("show", None), ("save", None), ("return_fig", False)):
        assert option in params, f"pl.{name}: takes {option}="
        assert params[option].kind is inspect.Parameter.KEYWORD_ONLY, f"pl.{name}: keyword-only {option}"
        assert params[option].default is default, f"pl.{name}: {option}={default} by default, as in scanpy"
        assert f"\n    {option}\n" in (func.__doc__ or ""), f"pl.{name}: {option} is documented"
    assert str(params["save"].annotation) == "bool | str | None", f"pl.{name}: save is True or a file-name suffix"
    returns = str(inspect.signature(func).return_annotation)
    assert returns in ("Figure | Axes | None", "Figure | list[Axes] | None"), f"pl.{name}: returns fig/axes/None"
    assert "ax" in params or "axs" in params, f"pl.{name}: draws into given axes"
    positional = [p for p in params.values() if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    assert len(positional) <= 1, f"pl.{name}: one positional parameter, the rest keyword-only"


def test_every_subpackage_reexports_its_public_names():
    for path in PACKAGE.iterdir():
        init = path / "__init__.py"
        if not init.exists():
            continue
        module = __import__(f"trajvi.{path.name}", fromlist=["__all__"])
        assert hasattr(module, "__all__"), f"trajvi.{path.name} has no __all__"
        for name in module.__all__:
            assert hasattr(module, name), f"trajvi.{path.name}.__all__ names {name}, which it lacks"
