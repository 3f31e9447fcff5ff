"""The distribution: namespace layout, typed markers, and README/CI agreement."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("pkg", ["engine", "modules", "models", "training"])
def test_code_folders_import_under_the_fxgate_namespace(pkg):
    mod = importlib.import_module(f"fxgate.{pkg}")
    assert Path(mod.__file__).resolve().parent == ROOT / pkg
    assert (ROOT / pkg / "py.typed").exists()
    assert isinstance(mod.__all__, list)


def test_public_api_is_explicit():
    import fxgate.engine as e

    for name in e.__all__:
        assert hasattr(e, name), name


def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", readme, re.S)
    commands = [ln.split("#")[0].strip() for b in blocks for ln in b.splitlines() if ln.strip().startswith("bash .ci/")]
    assert "bash .ci/setup.sh demo" in commands and "bash .ci/setup.sh test" in commands
    run_lines = [ln.strip() for ln in ci.splitlines() if not ln.strip().startswith("#")]
    tests = next(i for i, ln in enumerate(run_lines) if re.match(r"(exec )?bash \.ci/setup\.sh test\b", ln))
    # ruff format owns the layout: CI checks it, after the test command has installed ruff (the dev extra)
    layout = next(i for i, ln in enumerate(run_lines) if re.match(r"\S*ruff format --check \.( |$)", ln))
    assert tests < layout


def test_setup_script_pins_cpu_torch_before_the_train_extra():
    script = (ROOT / ".ci" / "setup.sh").read_text()
    assert script.index('"torch==2.13.0"') < script.index('".[dev,train,serve]"')
    assert 'status" -eq 5' in script  # pytest's "no tests collected" is a failure


def _imported_top_level_modules(folders: tuple[str, ...]) -> set[str]:
    """Top-level names of every ``import x`` / ``from x import`` in the code folders (function-level imports too)."""
    import ast

    names: set[str] = set()
    for folder in folders:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names.update(a.name.split(".")[0] for a in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.add(node.module.split(".")[0])
    return names


def test_every_runtime_dependency_is_imported_by_the_package():
    """A dependency the installed package never imports (``mapie`` was one) costs every user an install for nothing;
    a reference library only the tests use belongs in the ``dev`` extra. The import names come from the installed
    distributions' own metadata (``importlib.metadata.packages_distributions``), not from a list kept here."""
    import tomllib
    from importlib.metadata import packages_distributions

    def norm(name: str) -> str:  # PEP 503 normalization
        return re.sub(r"[-_.]+", "-", name).lower()

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    dists = {norm(re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", d).group()) for d in deps}  # PEP 508: the name first
    imported = _imported_top_level_modules(("engine", "modules", "models", "training"))
    provides: dict[str, set[str]] = {}
    for module, owners in packages_distributions().items():
        for owner in owners:
            provides.setdefault(norm(owner), set()).add(module)
    not_installed = sorted(d for d in dists if d not in provides)
    assert not not_installed, f"runtime dependencies not installed in this environment: {not_installed}"
    unused = sorted(d for d in dists if not provides[d] & imported)
    assert not unused, (
        f"pyproject.toml [project] dependencies that no file in engine/ modules/ models/ training/ "
        f"imports: {unused}. Fix: drop them, or move them to the dev extra if only tests use them"
    )


def test_importing_fxgate_models_loads_neither_llama_cpp_nor_the_boosters():
    """``fxgate.models`` re-exports nothing (its docstring says so): importing the package must stay cheap."""
    import subprocess
    import sys

    code = (
        "import sys, fxgate.models; heavy = {'llama_cpp', 'xgboost', 'lightgbm', 'catboost', 'numba'}; "
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_wheel_ships_prompt_templates_and_accelerate_configs_without_setuptools_warnings(tmp_path):
    """Build the wheel the way pip does (setuptools' bdist_wheel, no isolation: the environment's setuptools) from
    a copy of the source tree, so no build/ or egg-info lands in the checkout. Every prompt template and accelerate
    config in the source folders must be in the wheel at its import path, and setuptools must not warn that a data
    folder "would be ignored" (it only ships data from declared packages; newer releases drop the files)."""
    import shutil
    import subprocess
    import sys
    import zipfile

    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for pkg in ("engine", "modules", "models", "training"):
        shutil.copytree(ROOT / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    out = tmp_path / "wheel"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-v",
            "-w",
            str(out),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "would be ignored" not in log, log[max(0, log.find("would be ignored") - 1500) :][:3000]
    (wheel,) = out.glob("fxgate-*.whl")
    expected = {
        f"fxgate/models/prompts/{p.name}": p
        for p in (ROOT / "models" / "prompts").iterdir()
        if p.suffix in (".toml", ".jinja")
    }
    expected |= {f"fxgate/training/accelerate/{p.name}": p for p in (ROOT / "training" / "accelerate").glob("*.yaml")}
    assert {
        "fxgate/models/prompts/judge.v1.toml",
        "fxgate/models/prompts/deepseek_r1_distill.jinja",
        "fxgate/training/accelerate/ddp.yaml",
    } <= set(expected)
    with zipfile.ZipFile(wheel) as zf:
        missing = sorted(set(expected) - set(zf.namelist()))
        assert not missing, f"not in {wheel.name}: {missing}"
        for arc, path in expected.items():
            assert zf.read(arc) == path.read_bytes(), arc
