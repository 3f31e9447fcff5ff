"""The training extra's libraries, each imported in one place, on first use.

``fxgate train data``, ``train formulas``, ``train verify`` and the evaluation run without the ``train`` extra; only
SFT, DPO, merging, the GGUF export and the nano model's build need it. Every use of torch, transformers, peft, trl,
datasets, gguf or tokenizers in :mod:`fxgate.training` goes through the function of that name here, so a missing
library is one :class:`~fxgate.engine.core.errors.FxgateError` with the install command, not an ``ImportError``
from deep inside a step.
"""

from __future__ import annotations

from types import ModuleType

from fxgate.engine.core.errors import FxgateError

__all__ = ["MissingExtra", "INSTALL_HINT", "torch", "transformers", "peft", "trl", "hf_datasets", "gguf", "tokenizers"]

#: the CPU build of torch first: an unpinned torch pulls a multi-GB CUDA build (pyproject's note on the extra)
INSTALL_HINT = "pip install torch==2.13.0 'fxgate[train]' (on a GPU box: the CUDA torch you want, then 'fxgate[train]')"


class MissingExtra(FxgateError, ImportError):
    """A library of the ``train`` extra is not installed; the message says how to install it."""


def _missing(name: str, exc: ImportError) -> MissingExtra:
    return MissingExtra(f"{name} is not installed ({exc}); this step needs the train extra. Fix: {INSTALL_HINT}")


def torch() -> ModuleType:
    try:
        import torch
    except ImportError as exc:
        raise _missing("torch", exc) from exc
    return torch


def transformers() -> ModuleType:
    """``transformers`` (its lazy attributes load on access: ``transformers().Qwen2Config``)."""
    try:
        import transformers
    except ImportError as exc:
        raise _missing("transformers", exc) from exc
    return transformers


def peft() -> ModuleType:
    try:
        import peft
    except ImportError as exc:
        raise _missing("peft", exc) from exc
    return peft


def trl() -> ModuleType:
    try:
        import trl
    except ImportError as exc:
        raise _missing("trl", exc) from exc
    return trl


def hf_datasets() -> ModuleType:
    """Hugging Face ``datasets`` (named so it does not read as :mod:`fxgate.training.datasets`)."""
    try:
        import datasets
    except ImportError as exc:
        raise _missing("datasets", exc) from exc
    return datasets


def gguf() -> ModuleType:
    try:
        import gguf
    except ImportError as exc:
        raise _missing("gguf", exc) from exc
    return gguf


def tokenizers() -> ModuleType:
    try:
        import tokenizers
    except ImportError as exc:
        raise _missing("tokenizers", exc) from exc
    return tokenizers
