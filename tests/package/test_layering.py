"""The import rules of docs/architecture.md, checked on the source (every ``import`` statement, parsed with ast).

1. The foundation (``fxgate.engine.core``) imports nothing of fxgate outside itself.
2. ``fxgate.modules`` and ``fxgate.models`` import only the foundation and themselves (not each other).
3. Serving code (``engine`` except the CLI, ``models``, ``modules``) never imports ``fxgate.training``.
4. Imports sit at the top of a file. Only the optional heavy libraries are imported lazily, each behind one helper
   function per package (its install hint lives there).
5. The gate never names a module: no registered module name is a string in the gate's code.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {
    "engine": "fxgate.engine",
    "modules": "fxgate.modules",
    "models": "fxgate.models",
    "training": "fxgate.training",
}
#: optional libraries (extras: train, serve; shap in dev) that may be imported inside a function
OPTIONAL = {"torch", "transformers", "peft", "trl", "datasets", "accelerate", "gguf", "tokenizers", "llama_cpp", "shap"}
OPTIONAL |= {"fastapi", "uvicorn", "ray"}


def _modname(path: Path) -> str:
    rel = path.relative_to(ROOT)
    parts = list(rel.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([PACKAGES[parts[0]].split(".")[0], *([PACKAGES[parts[0]].split(".")[1]] + parts[1:])])


def _imports(path: Path, me: str | None = None) -> list[tuple[str, int, str | None]]:
    """(imported module, line, enclosing function or class name: None at module scope) for every import."""
    tree = ast.parse(path.read_text(), str(path))
    me = me or _modname(path)
    is_pkg = path.name == "__init__.py"
    out: list[tuple[str, int, str | None]] = []

    def visit(node: ast.AST, scope: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            inner = scope
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                inner = child.name if scope is None else f"{scope}.{child.name}"
            if isinstance(child, ast.Import):
                out.extend((a.name, child.lineno, scope) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:  # relative: resolve against this module
                    base = me.split(".") if is_pkg else me.split(".")[:-1]
                    base = base[: len(base) - (child.level - 1)]
                    mod = ".".join([*base, child.module] if child.module else base)
                else:
                    mod = child.module or ""
                out.append((mod, child.lineno, scope))
                # `from fxgate.engine import core` names a submodule
                out.extend((f"{mod}.{a.name}", child.lineno, scope) for a in child.names if mod.startswith("fxgate"))
            visit(child, inner)

    visit(tree, None)
    return out


def _files() -> list[Path]:
    return sorted(p for d in PACKAGES for p in (ROOT / d).rglob("*.py"))


def _under(mod: str, pkg: str) -> bool:
    return mod == pkg or mod.startswith(pkg + ".")


def _violations(rule, files=None, modname=None) -> list[str]:
    bad = []
    for f in files if files is not None else _files():
        me = (modname or _modname)(f)
        for mod, line, scope in _imports(f, me):
            why = rule(me, mod, scope)
            if why:
                bad.append(f"{_show(f)}:{line}: {me} imports {mod}{f' in {scope}()' if scope else ''}: {why}")
    return sorted(set(bad))


def _show(f: Path) -> str:
    return str(f.relative_to(ROOT)) if f.is_relative_to(ROOT) else str(f)


def _fx(mod: str) -> bool:
    return _under(mod, "fxgate")


def test_the_files_are_found():
    names = {_modname(f) for f in _files()}
    assert {"fxgate.engine.core.bars", "fxgate.engine.gate", "fxgate.modules.vpin", "fxgate.models.features"} <= names
    imps = {m for m, _, _ in _imports(ROOT / "engine" / "gate.py")}
    assert "fxgate.engine.core.decision" in imps or "fxgate.engine.core" in imps


def _foundation_rule(me, mod, scope):
    if _under(me, "fxgate.engine.core") and _fx(mod) and not _under(mod, "fxgate.engine.core"):
        if mod in ("fxgate.engine", "fxgate"):  # the parent packages themselves, always initialised first
            return None
        return "the foundation imports only itself and third-party code"
    return None


def _middle_rule(me, mod, scope):
    for pkg in ("fxgate.modules", "fxgate.models"):
        if _under(me, pkg) and _fx(mod) and not (_under(mod, pkg) or _under(mod, "fxgate.engine.core")):
            if mod in ("fxgate.engine", "fxgate"):
                return None
            return f"{pkg} may import only itself and fxgate.engine.core"
    return None


def _serving_rule(me, mod, scope):
    serving = _under(me, "fxgate.engine") and not _under(me, "fxgate.engine.cli")
    serving = serving or _under(me, "fxgate.models") or _under(me, "fxgate.modules")
    if serving and _under(mod, "fxgate.training"):
        return "serving code never imports training (training may import serving)"
    return None


def _top_rule(me, mod, scope):
    if scope is None or mod.split(".")[0] in OPTIONAL:
        return None
    return (
        "imports belong at the top of the file (an import hidden in a function to dodge a cycle means the "
        "layering is wrong)"
    )


def test_the_foundation_imports_nothing_above_it():
    assert _violations(_foundation_rule) == []


def test_modules_and_models_depend_only_on_the_foundation():
    assert _violations(_middle_rule) == []


def test_serving_code_never_imports_training():
    assert _violations(_serving_rule) == []


def test_imports_are_at_the_top_except_the_optional_heavy_libraries():
    assert _violations(_top_rule) == []


def test_each_optional_library_is_imported_lazily_in_one_helper_per_package():
    sites: dict[tuple[str, str], set[str]] = defaultdict(set)
    for f in _files():
        me = _modname(f)
        for mod, _line, scope in _imports(f):
            top = mod.split(".")[0]
            if scope is not None and top in OPTIONAL:
                sites[me.split(".")[1], top].add(f"{f.relative_to(ROOT)}:{scope}")
    many = {k: sorted(v) for k, v in sites.items() if len(v) > 1}
    assert many == {}


def test_the_gate_never_names_a_module():
    from fxgate.modules import REGISTRY

    names = set(REGISTRY)
    assert {"vpin", "robust_kelly", "bayesian_sizing"} <= names
    gate_files = [ROOT / "engine" / f for f in ("gate.py", "layers.py", "intake.py", "llm_setup.py")]
    found = []
    for f in gate_files:
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names:
                found.append(f"{f.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    assert found == []


@pytest.mark.parametrize(
    ("me", "line", "rule"),
    [
        ("fxgate.engine.core.bars", "from fxgate.engine.loader import LoadReport", _foundation_rule),
        ("fxgate.models.prompt", "from fxgate.training import formulas", _serving_rule),
        ("fxgate.engine.gate", "import fxgate.training.nano", _serving_rule),
        ("fxgate.modules.vpin", "from fxgate.models.features import FeatureEngine", _middle_rule),
        ("fxgate.models.features", "from fxgate.modules import Context", _middle_rule),
        ("fxgate.engine.gate", "def f():\n    from fxgate.modules import Context\n", _top_rule),
    ],
)
def test_the_rules_catch_a_planted_violation(tmp_path, me, line, rule):
    """Each rule reports a synthetic file that breaks it, and passes the same file without the planted line (so
    an empty list above means something)."""
    clean = tmp_path / "clean.py"
    clean.write_text("import math\nfrom fxgate.engine.core.bars import Bar\n")
    planted = tmp_path / "planted.py"
    planted.write_text(clean.read_text() + line + "\n")
    assert _violations(rule, [clean], lambda p: me) == []
    assert _violations(rule, [planted], lambda p: me) != []


def test_no_submodule_of_the_engine_shadows_one_of_its_lazy_public_names():
    """``fxgate.engine`` loads its public names on first use; importing a submodule sets an attribute of the same
    name on the package, so a submodule called like a public function (``replay``) would replace the function."""
    import fxgate.engine as engine

    submodules = {p.stem for p in (ROOT / "engine").glob("*.py")} | {
        p.name for p in (ROOT / "engine").iterdir() if p.is_dir()
    }
    assert submodules & set(engine._EXPORTS) == set()
    assert {"gate", "replaying", "core"} <= submodules
