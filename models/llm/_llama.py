"""The raw llama-cpp-python calls, in one place (as llama-cpp-python keeps its own in ``_internals.py``).

``llama_cpp`` is imported here only, lazily, by :func:`llama_cpp_module`: loading it loads the native library, which
nothing that merely imports fxgate should pay for. What reaches below ``llama_cpp.Llama``'s public methods — the
model-parameter patch, the grammar object, the C state API for saving and restoring a prefix's KV cache — is written
here; :class:`~fxgate.models.llm.runtime.LlmRuntime` uses these and the ``Llama`` object's own methods.
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from fxgate.models.llm.errors import LlmError

__all__ = ["SeqState", "llama_cpp_module", "load_llama", "compile_grammar", "save_seq", "load_seq"]

_LOAD_LOCK = threading.Lock()


def llama_cpp_module() -> ModuleType:
    """``llama_cpp`` (with its ``llama`` submodule loaded), or :class:`LlmError` with the install command."""
    try:
        import llama_cpp
        import llama_cpp.llama
    except ImportError as exc:  # pragma: no cover - a core dependency
        raise LlmError("llama-cpp-python is not installed. Fix: pip install llama-cpp-python") from exc
    return llama_cpp


def load_llama(path: str | Path, *, cpu_extra_buffers: bool = False, **kwargs: Any) -> Any:
    """``llama_cpp.Llama(model_path=path, **kwargs)`` with llama.cpp's extra CPU buffer types (AMX tiles, weight
    repacking) switched off unless ``cpu_extra_buffers``: on some virtual machines the CPU reports AMX but the
    hypervisor does not let a process use it, and the first Q8_0 matrix product dies with SIGILL — a crash no
    fail-closed path can catch. Off costs some CPU speed on bare metal; GPU offload is unaffected."""
    lc = llama_cpp_module()
    kwargs.setdefault("verbose", False)
    if cpu_extra_buffers:
        return lc.Llama(model_path=str(path), **kwargs)
    # Llama() reads its model parameters from llama_cpp.llama's binding of llama_model_default_params and offers no
    # argument for use_extra_bufts; the binding is swapped for the duration of one load (under a lock: it is global).
    bindings = lc.llama.llama_cpp
    with _LOAD_LOCK:
        orig = bindings.llama_model_default_params

        def params() -> Any:
            p = orig()
            p.use_extra_bufts = False
            return p

        bindings.llama_model_default_params = params
        try:
            return lc.Llama(model_path=str(path), **kwargs)
        finally:
            bindings.llama_model_default_params = orig


def compile_grammar(gbnf: str) -> Any:
    """A ``LlamaGrammar`` for ``Llama.generate(grammar=...)``."""
    return llama_cpp_module().LlamaGrammar.from_string(gbnf, verbose=False)


@dataclass(frozen=True, slots=True)
class SeqState:
    """A saved KV cache of sequence 0 and the tokens it holds (the context's first ``n_tokens`` token ids)."""

    n_tokens: int
    data: bytes
    ids: np.ndarray


def save_seq(llm: Any) -> SeqState:
    """The KV cache of what ``llm``'s context holds now."""
    lc, ctx = llama_cpp_module(), llm._ctx.ctx
    size = lc.llama_state_seq_get_size(ctx, 0)
    buf = (ctypes.c_uint8 * size)()
    n = lc.llama_state_seq_get_data(ctx, buf, size, 0)
    return SeqState(llm.n_tokens, bytes(buf[:n]), llm.input_ids[: llm.n_tokens].copy())


def load_seq(llm: Any, st: SeqState) -> None:
    """Replace ``llm``'s context with a saved state; its logits are stale until the next evaluation."""
    lc = llama_cpp_module()
    llm._ctx.kv_cache_seq_rm(0, 0, -1)
    buf = (ctypes.c_uint8 * len(st.data)).from_buffer_copy(st.data)
    if lc.llama_state_seq_set_data(llm._ctx.ctx, buf, len(st.data), 0) == 0:
        raise LlmError("llama.cpp refused a saved prefix state")
    llm.input_ids[: st.n_tokens] = st.ids
    llm.n_tokens = st.n_tokens
