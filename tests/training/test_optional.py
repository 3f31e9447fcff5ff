"""The train extra is optional: every training module imports without it, and a step that needs it says how to
install it (one helper per library, training/_optional.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

EXTRA = ("torch", "transformers", "peft", "trl", "datasets", "accelerate", "gguf", "tokenizers")
MODULES = (
    "fxgate.training.datasets",
    "fxgate.training.formulas",
    "fxgate.training.imports",
    "fxgate.training.evaluate",
    "fxgate.training.pipeline",
    "fxgate.training.sft",
    "fxgate.training.dpo",
    "fxgate.training.export",
    "fxgate.training.nano",
    "fxgate.training.presets",
)


def test_training_imports_without_the_train_extra_and_names_the_install_command():
    """In a fresh interpreter where the extra's libraries cannot be imported, every training module loads, none of
    the libraries is loaded, and the first step that needs one raises MissingExtra with the install command."""
    code = textwrap.dedent(
        f"""
        import importlib, importlib.abc, sys
        EXTRA = {EXTRA!r}

        class Hide(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in EXTRA:
                    raise ImportError(f"No module named {{name!r}} (hidden by the test)")
                return None

        sys.meta_path.insert(0, Hide())
        for m in {MODULES!r}:
            importlib.import_module(m)
        assert not [k for k in sys.modules if k.split(".")[0] in EXTRA], sorted(sys.modules)
        from fxgate.engine.core.errors import FxgateError
        from fxgate.training import _optional
        from fxgate.training.export import load_tokenizer

        for step in (_optional.torch, _optional.tokenizers, lambda: load_tokenizer("model-dir")):
            try:
                step()
            except _optional.MissingExtra as exc:
                assert isinstance(exc, FxgateError) and isinstance(exc, ImportError)
                assert "pip install torch==2.13.0 'fxgate[train]'" in str(exc), str(exc)
            else:
                raise AssertionError("no MissingExtra")
        print("ok")
        """
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-3000:]
