"""The raw llama-cpp-python calls, in one place (as llama-cpp-python keeps its own in ``_internals.py``).

``llama_cpp`` is imported here only, lazily, by :func:`llama_cpp_module`: loading it loads the native library, which
nothing that merely imports fxgate should pay for. What reaches below ``llama_cpp.Llama``'s public methods — the
model-parameter patch, the grammar object, the C state API for saving and restoring a prefix's KV cache, and the
multi-sequence API the debate's parallel bull/bear uses (a context with ``n_seq_max`` sequences, a stream of KV cells
per sequence, ``llama_batch_init``/``llama_decode`` with a ``seq_id`` per token, ``llama_memory_seq_cp``/``_rm``, one
sampler chain per sequence read at its own logits row) — is written here; :class:`~fxgate.models.llm.runtime.LlmRuntime`
uses these and the ``Llama`` object's own methods.
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

__all__ = [
    "SeqState",
    "SeqBatch",
    "llama_cpp_module",
    "load_llama",
    "compile_grammar",
    "save_seq",
    "load_seq",
    "seq_rm",
    "seq_cp",
    "new_sampler",
    "sample",
]

_LOAD_LOCK = threading.Lock()


def llama_cpp_module() -> ModuleType:
    """``llama_cpp`` (with its ``llama`` submodule loaded), or :class:`LlmError` with the install command."""
    try:
        import llama_cpp
        import llama_cpp.llama
    except ImportError as exc:  # pragma: no cover - a core dependency
        raise LlmError("llama-cpp-python is not installed. Fix: pip install llama-cpp-python") from exc
    return llama_cpp


def load_llama(path: str | Path, *, cpu_extra_buffers: bool = False, n_seq_max: int = 1, **kwargs: Any) -> Any:
    """``llama_cpp.Llama(model_path=path, **kwargs)`` with llama.cpp's extra CPU buffer types (AMX tiles, weight
    repacking) switched off unless ``cpu_extra_buffers``: on some virtual machines the CPU reports AMX but the
    hypervisor does not let a process use it, and the first Q8_0 matrix product dies with SIGILL — a crash no
    fail-closed path can catch. Off costs some CPU speed on bare metal; GPU offload is unaffected.

    ``n_seq_max`` > 1: a context that can hold that many sequences, each in its own stream of ``n_ctx / n_seq_max``
    KV cells (the caller multiplies ``n_ctx`` to give each sequence its own budget); :func:`seq_cp` copies a prefix
    from one to another. ``Llama`` itself evaluates sequence 0 only."""
    lc = llama_cpp_module()
    kwargs.setdefault("verbose", False)
    if cpu_extra_buffers and n_seq_max == 1:
        return lc.Llama(model_path=str(path), **kwargs)
    # Llama() reads its model and context parameters from llama_cpp.llama's bindings of llama_model_default_params
    # and llama_context_default_params and offers no argument for use_extra_bufts, n_seq_max or kv_unified; the
    # bindings are swapped for the duration of one load (under a lock: they are global).
    bindings = lc.llama.llama_cpp
    with _LOAD_LOCK:
        orig_model, orig_ctx = bindings.llama_model_default_params, bindings.llama_context_default_params

        def model_params() -> Any:
            p = orig_model()
            p.use_extra_bufts = cpu_extra_buffers
            return p

        def ctx_params() -> Any:
            p = orig_ctx()
            p.n_seq_max = n_seq_max
            # One stream of cells per sequence, not one unified pool: a sequence's cells then sit where they would in
            # a single-sequence context, and its attention sums the same numbers in the same order. In a unified
            # pool the two sequences' cells interleave and the masked cells change the grouping of the softmax and
            # KQV sums: last-bit differences that flipped a greedy token of the nano model in 1 of 12 generations.
            p.kv_unified = False
            return p

        bindings.llama_model_default_params = model_params
        bindings.llama_context_default_params = ctx_params
        try:
            return lc.Llama(model_path=str(path), **kwargs)
        finally:
            bindings.llama_model_default_params = orig_model
            bindings.llama_context_default_params = orig_ctx


def compile_grammar(gbnf: str) -> Any:
    """A ``LlamaGrammar`` for ``Llama.generate(grammar=...)``."""
    return llama_cpp_module().LlamaGrammar.from_string(gbnf, verbose=False)


@dataclass(frozen=True, slots=True)
class SeqState:
    """A saved KV cache of sequence 0 and the tokens it holds (the context's first ``n_tokens`` token ids)."""

    n_tokens: int
    data: bytes
    ids: np.ndarray


def save_seq(llm: Any, seq: int = 0, ids: list[int] | None = None) -> SeqState:
    """The KV cache of sequence ``seq`` of ``llm``'s context: for sequence 0 what ``Llama`` holds now; for another
    sequence the caller says which tokens it holds (``ids``)."""
    lc, ctx = llama_cpp_module(), llm._ctx.ctx
    size = lc.llama_state_seq_get_size(ctx, seq)
    buf = (ctypes.c_uint8 * size)()
    n = lc.llama_state_seq_get_data(ctx, buf, size, seq)
    toks = llm.input_ids[: llm.n_tokens].copy() if ids is None else np.asarray(ids, dtype=llm.input_ids.dtype)
    return SeqState(len(toks), bytes(buf[:n]), toks)


def load_seq(llm: Any, st: SeqState, seq: int = 0) -> None:
    """Replace sequence ``seq`` of ``llm``'s context with a saved state (saved from any sequence); its logits are
    stale until the next evaluation. Sequence 0 is ``Llama``'s own: its token bookkeeping follows."""
    lc = llama_cpp_module()
    seq_rm(llm, seq, 0)
    buf = (ctypes.c_uint8 * len(st.data)).from_buffer_copy(st.data)
    if lc.llama_state_seq_set_data(llm._ctx.ctx, buf, len(st.data), seq) == 0:
        raise LlmError("llama.cpp refused a saved prefix state")
    if seq == 0:
        llm.input_ids[: st.n_tokens] = st.ids
        llm.n_tokens = st.n_tokens


def seq_rm(llm: Any, seq: int, p0: int, p1: int = -1) -> None:
    """Drop the cells of sequence ``seq`` at positions [p0, p1) (p1 < 0: to the end)."""
    lc = llama_cpp_module()
    lc.llama_memory_seq_rm(lc.llama_get_memory(llm._ctx.ctx), seq, p0, p1)


def seq_cp(llm: Any, src: int, dst: int, n: int) -> None:
    """Give the empty sequence ``dst`` the cells of sequence ``src`` at positions [0, n), without evaluating them.
    Each sequence has its own stream of cells (see :func:`load_llama`), and llama.cpp copies between streams only
    whole sequences (a partial copy is a GGML_ASSERT abort), so the whole of ``src`` is copied (on the next decode)
    and ``dst`` trimmed to ``n``."""
    lc = llama_cpp_module()
    mem = lc.llama_get_memory(llm._ctx.ctx)
    lc.llama_memory_seq_cp(mem, src, dst, -1, -1)
    lc.llama_memory_seq_rm(mem, dst, n, -1)


class SeqBatch:
    """A ``llama_batch`` of up to ``capacity`` tokens, each tagged with one sequence id and its position."""

    def __init__(self, capacity: int) -> None:
        self._lc = llama_cpp_module()
        self.capacity = capacity
        self.batch = self._lc.llama_batch_init(capacity, 0, 1)

    def close(self) -> None:
        if self.batch is not None:
            self._lc.llama_batch_free(self.batch)
            self.batch = None

    def decode(self, llm: Any, items: list[tuple[int, int, int, bool]]) -> None:
        """One ``llama_decode`` of ``items`` = (token, position, sequence, wants logits), at most ``capacity``."""
        b, n = self.batch, len(items)
        if not 0 < n <= self.capacity:
            raise LlmError(f"internal error: a batch of {n} tokens (capacity {self.capacity})")
        b.n_tokens = n
        for i, (tok, pos, seq, logits) in enumerate(items):
            b.token[i] = tok
            b.pos[i] = pos
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = seq
            b.logits[i] = logits
        rc = self._lc.llama_decode(llm._ctx.ctx, b)
        if rc != 0:
            raise LlmError(
                f"llama_decode returned {rc} on a {n}-token batch"
                + (" (no free KV cells: raise [llm] n_ctx)" if rc == 1 else "")
            )


def new_sampler(llm: Any, grammar: Any | None = None, **sample_kw: Any) -> Any:
    """A fresh sampler chain, built exactly as ``Llama.generate`` builds its own for the same arguments (so a
    sequence sampled with it picks the token a single-sequence ``generate`` call would)."""
    return llm._init_sampler(grammar=grammar, **sample_kw)


def sample(llm: Any, sampler: Any, row: int) -> int:
    """Sample (and accept into ``sampler``: the grammar advances) from the logits of batch position ``row`` of the
    last decode."""
    return int(sampler.sample(llm._ctx, row))
