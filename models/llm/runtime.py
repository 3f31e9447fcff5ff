"""The LLM runtime: one GGUF model on llama-cpp-python — deterministic, grammar-constrained, prefix-cached, with a
deadline on every call.

:class:`LlmRuntime` owns one ``llama_cpp.Llama`` (loaded through :mod:`fxgate.models.llm._llama`, where the raw calls
live) and one worker thread. A call renders the prompt with the chat template from the GGUF metadata, restores the KV
cache of its static prefix (system prompt + static sections) if it has seen it, evaluates the rest, lets the model
reason inside ``<think>`` for at most ``think_budget`` tokens (closing the block itself when the budget runs out),
then generates the answer under a GBNF grammar that only admits the role's JSON object
(:mod:`fxgate.models.llm.answers`). Every call has a deadline: the caller waits at most ``timeout_s``, the worker
stops at its next token or prompt chunk, and a late call fails closed instead of blocking the gate. Completed calls
go to the :class:`~fxgate.models.llm.cache.VerdictCache` when one is given.

:meth:`LlmRuntime.generate_many` runs up to ``[llm]``-level ``n_seq`` calls at once as parallel sequences of the one
context (the debate's bull and bear): each sequence gets its static prefix from a saved state, from the cells of
sequence 0 it shares a token prefix with (``llama_memory_seq_cp``: evaluated once), or by evaluating it; then every
sequence's per-bar suffix, and each generated token of every sequence, go through one ``llama_decode`` per step, and
each sequence samples from its own logits row with its own sampler chain (its own grammar in the answer phase). Under
greedy decoding each sequence gives the tokens :meth:`LlmRuntime.generate` gives for its prompt alone.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fxgate.models.llm import _llama
from fxgate.models.llm.answers import parse_answer
from fxgate.models.llm.cache import VerdictCache
from fxgate.models.llm.errors import LlmError, ModelFileError
from fxgate.models.llm.generation import Generation, LlmSettings
from fxgate.models.llm.gguf import verify_gguf
from fxgate.models.prompt import (
    GENERATION_RESERVE,
    ContextOverflow,
    PromptTemplate,
    RenderedPrompt,
    build_prompt,
    prompt_budget,
)

__all__ = ["LlmRuntime", "LlmCall", "PROTOCOL_VERSION"]

#: Bump when the generation protocol changes (think handling, grammar, parsing): part of every cache key.
PROTOCOL_VERSION = 1


class _Cancelled(Exception):
    pass


@dataclass
class _Spec:
    kind: str
    think_budget: int
    answer_budget: int
    grammar: str
    timeout_s: float
    cancel: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True)
class LlmCall:
    """One call of :meth:`LlmRuntime.generate_many`: the arguments :meth:`LlmRuntime.generate` takes."""

    prompt: RenderedPrompt
    kind: str
    think_budget: int
    answer_budget: int
    grammar: str


@dataclass
class _Seq:
    """One sequence of a :meth:`LlmRuntime.generate_many` call on the worker: where it is and what it has made."""

    index: int  # in the caller's list
    seq: int  # llama.cpp sequence id (0 = the one ``Llama`` keeps its bookkeeping for)
    spec: _Spec
    tokens: list[int]
    kv: list[int] = field(default_factory=list)  # the tokens this sequence's cells hold, in position order
    pending: list[int] = field(default_factory=list)  # to evaluate at the next decode
    phase: str = "prefill"  # prefill -> think -> answer -> done
    sampler: Any = None
    think_ids: list[int] = field(default_factory=list)
    out: list[int] = field(default_factory=list)
    think_text: str = ""
    truncated: bool = False
    natural_end: bool = False
    finished: bool = False
    evaluated: int = 0
    how: str = "cold"
    ttft: float | None = None
    total_s: float = 0.0


class LlmRuntime:
    """One GGUF model, loaded once, used by one worker thread (llama.cpp contexts are not thread-safe).

    Thread safety: any number of caller threads may call :meth:`build`, :meth:`generate`, :meth:`tokenize` and
    :meth:`forget_prefixes` at once (the gate runs the LLM layers of concurrent ``on_bar`` calls outside its own
    lock). Everything that touches the llama.cpp context (evaluation, sampling, the KV cache, the saved prefix
    states in ``_states``) runs on the single worker thread, so calls are serialized there and each caller gets the
    answer its own prompt gives. Callers tokenize on their own thread (``llama_tokenize`` reads only the vocabulary,
    never the context, and releases the GIL), so building a prompt never waits for a generation in flight. The state
    shared between threads is the token cache and the ``stats`` counters, each behind its own lock that is never
    held across a llama.cpp call, and the verdict cache (:class:`VerdictCache` serializes its SQLite connection).
    """

    def __init__(self, settings: LlmSettings, *, cache: VerdictCache | None = None) -> None:
        self.settings = settings
        self.sha256 = verify_gguf(settings.model, settings.sha256)
        if settings.n_seq < 1:
            raise ValueError(f"n_seq = {settings.n_seq}: must be >= 1")
        kw: dict[str, Any] = {
            "n_ctx": settings.n_ctx * settings.n_seq,  # every sequence may use the whole n_ctx budget
            "n_gpu_layers": settings.n_gpu_layers,
            "seed": settings.seed,
            "n_batch": max(settings.n_batch, settings.n_seq),  # a step's last token of every sequence in one batch
            "logits_all": False,
        }
        if settings.n_threads > 0:
            kw["n_threads"] = settings.n_threads
        try:
            self.llm = _llama.load_llama(
                Path(settings.model).expanduser(),
                cpu_extra_buffers=settings.cpu_extra_buffers,
                n_seq_max=settings.n_seq,
                **kw,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelFileError(
                f"{settings.model}: llama.cpp could not load it ({exc}); the file is corrupt, "
                f"truncated or of an unsupported architecture"
            ) from exc
        if settings.chat_template:
            try:
                self.chat_template = Path(settings.chat_template).expanduser().read_text()
            except OSError as exc:
                raise ModelFileError(
                    f"[llm] chat_template = {settings.chat_template!r}: cannot read ({exc.strerror})"
                ) from exc
        else:
            ct = self.llm.metadata.get("tokenizer.chat_template")
            if not ct:
                raise ModelFileError(
                    f"{settings.model}: the GGUF has no tokenizer.chat_template. Fix: re-export it "
                    f"with fxgate.training.export, or set [llm] chat_template to the model's "
                    f"Jinja template file"
                )
            self.chat_template = ct
        self._tokens: OrderedDict[str, list[int]] = OrderedDict()  # LRU; shared by callers and the worker
        self._tokens_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self.stats = {"calls": 0, "timeouts": 0, "state_restores": 0, "state_saves": 0}
        self.bos_id, self.eos_id = self.llm.token_bos(), self.llm.token_eos()
        self.bos_token = self._piece(self.bos_id)
        self.eos_token = self._piece(self.eos_id)
        ids = self.tokenize("</think>")
        self.think_end_id = ids[0] if len(ids) == 1 else None
        self.cache = cache
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fxgate-llm")
        self._states: OrderedDict[bytes, _llama.SeqState] = OrderedDict()  # worker thread only
        self._batch = _llama.SeqBatch(kw["n_batch"]) if settings.n_seq > 1 else None  # worker thread only

    # tokens ------------------------------------------------------------------------------------------------------
    def _piece(self, tok: int) -> str:
        if tok is None or tok < 0:
            return ""
        return self.llm.detokenize([tok], special=True).decode("utf-8", errors="replace")

    def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text`` with special tokens parsed and no BOS added (chat templates write their own).
        The last few results are kept: a call tokenizes the prompt its budget check already counted, and every call
        of a template shares its static prefix. Do not modify the returned list."""
        # Caller threads (build) and the worker (_run) share the cache: without the lock, another thread can evict
        # the entry between the lookup and move_to_end (a KeyError that fails the call closed). The lock is not
        # held while llama.cpp tokenizes: two threads missing the same text both tokenize it, with the same result.
        with self._tokens_lock:
            ids = self._tokens.get(text)
            if ids is not None:
                self._tokens.move_to_end(text)
                return ids
        ids = self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        with self._tokens_lock:
            self._tokens[text] = ids
            self._tokens.move_to_end(text)
            while len(self._tokens) > 32:
                self._tokens.popitem(last=False)
        return ids

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text))

    # prompts -----------------------------------------------------------------------------------------------------
    def build(
        self, tpl: PromptTemplate, values: dict[str, str], *, think_budget: int, answer_budget: int
    ) -> RenderedPrompt:
        budget = prompt_budget(self.settings.n_ctx, think_budget, answer_budget)  # the one training uses too
        return build_prompt(
            tpl,
            values,
            chat_template=self.chat_template,
            bos_token=self.bos_token,
            eos_token=self.eos_token,
            count_tokens=self.count_tokens,
            budget=budget,
        )

    def cache_key(self, prompt: RenderedPrompt, kind: str, think_budget: int, answer_budget: int, grammar: str) -> str:
        s = self.settings
        return VerdictCache.key(
            protocol=PROTOCOL_VERSION,
            model=self.sha256,
            prompt=prompt.text,
            kind=kind,
            think=think_budget,
            answer=answer_budget,
            grammar=grammar,
            temperature=s.temperature,
            top_p=s.top_p,
            top_k=s.top_k,
            seed=s.seed if s.temperature > 0 else None,
            chat_template=hashlib.sha256(self.chat_template.encode()).hexdigest(),
        )

    # the call ----------------------------------------------------------------------------------------------------
    def generate(
        self,
        prompt: RenderedPrompt,
        *,
        kind: str,
        think_budget: int,
        answer_budget: int,
        grammar: str,
        timeout_s: float | None = None,
        use_cache: bool = True,
    ) -> Generation:
        """Run one call under a deadline. Raises :class:`LlmError` (timeout, context overflow, llama.cpp failure);
        a completed call with an unusable answer returns a Generation with ``error`` set."""
        timeout = self.settings.timeout_s if timeout_s is None else timeout_s
        use = self.cache is not None and use_cache
        key = self.cache_key(prompt, kind, think_budget, answer_budget, grammar) if use else None
        if key is not None:
            hit = self.cache.get(key)  # type: ignore[union-attr]
            if hit is not None:
                return replace(Generation.from_dict(hit), cached=True)
        spec = _Spec(kind, think_budget, answer_budget, grammar, timeout)
        t0 = time.perf_counter()
        fut: Future[Generation] = self._pool.submit(self._run, prompt, spec, t0)
        try:
            g = fut.result(timeout=max(0.0, timeout))
        except FutureTimeout:
            spec.cancel.set()
            fut.cancel()  # a call still queued behind another never starts
            self._count("timeouts")
            raise LlmError(f"generation timed out after {timeout:g} s ([llm] timeout_s)") from None
        except _Cancelled:  # pragma: no cover - only after a timeout, which is handled above
            raise LlmError("generation cancelled") from None
        except ContextOverflow as exc:
            raise LlmError(str(exc)) from exc
        except LlmError:
            raise
        except Exception as exc:  # llama.cpp decode failures surface as RuntimeError and friends
            raise LlmError(f"llama.cpp failed during generation: {type(exc).__name__}: {exc}") from exc
        g = replace(g, prompt_sections=prompt.sections, dropped_sections=prompt.dropped, template=prompt.template_id)
        if key is not None and g.error is None:
            self.cache.put(key, g.to_dict())  # type: ignore[union-attr]
        return g

    def generate_many(
        self, calls: list[LlmCall], *, timeout_s: float | None = None, use_cache: bool = True
    ) -> list[Generation | LlmError]:
        """Run up to ``settings.n_seq`` calls together, as parallel sequences of the one context, under one deadline.
        One result per call, in order: its Generation (``error`` set for an unusable answer, as :meth:`generate`),
        or the :class:`LlmError` that call failed with (its context overflow; a timeout or a llama.cpp failure fails
        every call of the group). Verdict-cache hits are served without running."""
        if not 0 < len(calls) <= self.settings.n_seq:
            raise ValueError(f"generate_many: {len(calls)} calls, this runtime holds 1 to {self.settings.n_seq}")
        timeout = self.settings.timeout_s if timeout_s is None else timeout_s
        use = self.cache is not None and use_cache
        keys = [
            self.cache_key(c.prompt, c.kind, c.think_budget, c.answer_budget, c.grammar) if use else None for c in calls
        ]
        results: list[Generation | LlmError | None] = [None] * len(calls)
        for i, key in enumerate(keys):
            hit = self.cache.get(key) if key is not None else None  # type: ignore[union-attr]
            if hit is not None:
                results[i] = replace(Generation.from_dict(hit), cached=True)
        todo = [i for i, r in enumerate(results) if r is None]
        if todo:
            cancel = threading.Event()
            specs = [
                _Spec(calls[i].kind, calls[i].think_budget, calls[i].answer_budget, calls[i].grammar, timeout, cancel)
                for i in todo
            ]
            t0 = time.perf_counter()
            fut = self._pool.submit(self._run_many, [calls[i].prompt for i in todo], specs, cancel, t0)
            try:
                got: list[Generation | Exception] = fut.result(timeout=max(0.0, timeout))
            except FutureTimeout:
                cancel.set()
                fut.cancel()
                self._count("timeouts")
                got = [LlmError(f"generation timed out after {timeout:g} s ([llm] timeout_s)")] * len(todo)
            except _Cancelled:  # pragma: no cover - only after a timeout, which is handled above
                got = [LlmError("generation cancelled")] * len(todo)
            except LlmError as exc:
                got = [exc] * len(todo)
            except Exception as exc:  # noqa: BLE001 - llama.cpp failures become every call's LlmError
                err = LlmError(f"llama.cpp failed during generation: {type(exc).__name__}: {exc}")
                got = [err] * len(todo)
            for i, g in zip(todo, got, strict=True):
                if isinstance(g, ContextOverflow):
                    results[i] = LlmError(str(g))
                elif isinstance(g, Generation):
                    p = calls[i].prompt
                    g = replace(g, prompt_sections=p.sections, dropped_sections=p.dropped, template=p.template_id)
                    if keys[i] is not None and g.error is None:
                        self.cache.put(keys[i], g.to_dict())  # type: ignore[union-attr]
                    results[i] = g
                else:
                    results[i] = g if isinstance(g, LlmError) else LlmError(str(g))
        return results  # type: ignore[return-value]

    def _run_many(
        self, prompts: list[RenderedPrompt], specs: list[_Spec], cancel: threading.Event, t_submit: float
    ) -> list[Generation | Exception]:
        """The worker side of :meth:`generate_many`: every call that fits becomes one sequence; the results of the
        others are their ContextOverflow."""
        out: list[Generation | Exception | None] = [None] * len(prompts)
        seqs: list[_Seq] = []
        statics: list[int] = []
        for i, (p, sp) in enumerate(zip(prompts, specs, strict=True)):
            self._count("calls")
            tokens = self.tokenize(p.text)
            try:
                self._check_fits(tokens, sp)
            except ContextOverflow as exc:
                out[i] = exc
                continue
            seqs.append(_Seq(i, len(seqs), sp, tokens))
            statics.append(self._static_len(p, tokens))
        if cancel.is_set():
            raise _Cancelled
        if seqs:
            # On any failure sequence 0 stays consistent: Llama's n_tokens only moves with cells that hold
            # input_ids, and Llama.eval drops the cells beyond it before its next decode.
            try:
                for i, g in self._decode_seqs(seqs, statics, cancel, t_submit):
                    out[i] = g
            finally:
                for s in seqs[1:]:  # free the other sequences' cells (the next pair clears them before use too)
                    _llama.seq_rm(self.llm, s.seq, 0)
        return out  # type: ignore[return-value]

    def _decode_seqs(
        self, seqs: list[_Seq], statics: list[int], cancel: threading.Event, t_submit: float
    ) -> list[tuple[int, Generation]]:
        llm, st = self.llm, self.settings
        t0 = time.perf_counter()
        # 1. static prefixes. Sequence 0 as generate() gets its own; the others share sequence 0's cells as far as
        #    their tokens agree (seq_cp), then restore or evaluate the rest of their static prefix.
        s0 = seqs[0]
        held, s0.evaluated, s0.how = self._static_prefix(s0.tokens, statics[0], cancel)
        s0.kv = s0.tokens[:held]
        ref = llm.input_ids[: llm.n_tokens].tolist()  # what sequence 0's cells hold now (a prefix of it is s0.kv)
        for s, static_len in zip(seqs[1:], statics[1:], strict=True):
            _llama.seq_rm(llm, s.seq, 0)
            shared = _common_prefix(ref, s.tokens)
            key = hashlib.sha256(json.dumps(s.tokens[:static_len]).encode()).digest() if static_len else b""
            state = self._states.get(key) if static_len and shared < static_len else None
            if state is not None:
                self._states.move_to_end(key)
                _llama.load_seq(llm, state, s.seq)
                self._count("state_restores")
                s.kv, s.how = s.tokens[:static_len], "state"
                continue
            if shared:
                _llama.seq_cp(llm, 0, s.seq, shared)
            s.kv = s.tokens[:shared]
            s.how = "kv" if static_len and shared >= static_len else "cold"
            if static_len > shared:
                s.pending = s.tokens[shared:static_len]
                s.evaluated += len(s.pending)
                self._decode([s], cancel, want_logits=False)
                self._states[key] = _llama.save_seq(llm, s.seq, s.kv)
                self._count("state_saves")
                while len(self._states) > st.prefix_states:
                    self._states.popitem(last=False)
        # 2. the rest of every prompt, in one batch (at least the last token, for fresh logits)
        for s in seqs:
            keep = min(len(s.kv), len(s.tokens) - 1)
            _llama.seq_rm(llm, s.seq, keep)
            s.kv = s.kv[:keep]
            s.pending = s.tokens[keep:]
            s.evaluated += len(s.pending)
        llm.n_tokens = len(s0.kv)
        sample_kw = {"temp": st.temperature, "top_k": st.top_k, "top_p": st.top_p, "min_p": 0.0, "repeat_penalty": 1.0}
        llm.set_seed(st.seed)  # each sequence's sampler starts from the seed, as each generate() call's does
        live = list(seqs)
        first = True
        prompt_s = 0.0
        while live:
            rows = self._decode(live, cancel, want_logits=True)
            if first:
                prompt_s, first = time.perf_counter() - t0, False
                for s in seqs:
                    s.phase = "think" if s.spec.think_budget > 0 else "answer"
                    if s.phase == "think":
                        s.sampler = _llama.new_sampler(llm, None, **sample_kw)
                    else:
                        self._to_answer(s, sample_kw)  # no reasoning: the answer prompt is decoded first
            for s in live:
                if s.pending:  # entered the answer phase before this step's sample: decode its prompt first
                    continue
                tok = _llama.sample(llm, s.sampler, rows[s.seq])
                if s.ttft is None:
                    s.ttft = time.perf_counter() - t_submit
                if s.phase == "think":
                    if tok == self.think_end_id or tok == self.eos_id:
                        s.natural_end = True
                        self._to_answer(s, sample_kw)
                        continue
                    s.think_ids.append(tok)
                    if len(s.think_ids) >= s.spec.think_budget:
                        s.truncated = True
                        self._to_answer(s, sample_kw)
                        continue
                    s.pending = [tok]
                else:
                    if tok == self.eos_id:
                        s.finished = True
                        s.phase = "done"
                    else:
                        s.out.append(tok)
                        if len(s.out) >= s.spec.answer_budget:
                            s.phase = "done"
                        else:
                            s.pending = [tok]
                    if s.phase == "done":
                        s.total_s = time.perf_counter() - t_submit
                if cancel.is_set():
                    raise _Cancelled
            live = [s for s in live if s.phase != "done"]
        # Llama's bookkeeping follows what sequence 0's cells hold, for the next generate()
        llm.input_ids[: len(s0.kv)] = s0.kv
        llm.n_tokens = len(s0.kv)
        return [
            (
                s.index,
                self._generation(
                    s.spec,
                    s.tokens,
                    s.think_text,
                    s.think_ids,
                    s.truncated,
                    s.out,
                    s.finished,
                    s.evaluated,
                    s.how,
                    prompt_s,
                    s.ttft,
                    s.total_s,
                ),
            )
            for s in seqs
        ]

    def _to_answer(self, s: _Seq, sample_kw: dict[str, Any]) -> None:
        """End the reasoning of ``s`` as generate() does: close the block, then the answer under the grammar."""
        s.think_text = self.llm.detokenize(s.think_ids, special=False).decode("utf-8", errors="replace")
        answer_prompt = s.tokens + s.think_ids + self.tokenize(self._close_text(s.think_text, s.natural_end))
        s.pending = answer_prompt[len(s.kv) :]
        s.sampler = _llama.new_sampler(self.llm, _llama.compile_grammar(s.spec.grammar), **sample_kw)
        s.phase = "answer"

    def _decode(self, seqs: list[_Seq], cancel: threading.Event, *, want_logits: bool) -> dict[int, int]:
        """Evaluate every sequence's pending tokens at its next positions, in batches of at most n_batch tokens;
        the last pending token of each sequence goes into the last batch, whose row (the batch position) for each
        sequence is returned, so every sequence samples from its own logits."""
        assert self._batch is not None
        head: list[tuple[int, int, int, bool]] = []
        tail: list[tuple[int, int, int, bool]] = []
        for s in seqs:
            if not s.pending:
                continue
            pos = len(s.kv)
            head += [(t, pos + j, s.seq, False) for j, t in enumerate(s.pending[:-1])]
            tail.append((s.pending[-1], pos + len(s.pending) - 1, s.seq, want_logits))
        items = head + tail
        n = self._batch.capacity  # >= n_seq >= len(tail): the last batch holds the whole tail
        last_start = max(0, len(items) - n)
        chunks = [items[c : min(c + n, last_start)] for c in range(0, last_start, n)] + [items[last_start:]]
        for chunk in chunks:
            if cancel.is_set():
                raise _Cancelled
            self._batch.decode(self.llm, chunk)
        rows: dict[int, int] = {}
        for r, (_, _, seq, _) in enumerate(chunks[-1]):
            rows[seq] = r  # the tail comes last: each sequence's last entry in the last batch is its last token
        for s in seqs:
            s.kv += s.pending
            s.pending = []
        return rows

    def _count(self, name: str) -> None:
        with self._stats_lock:  # callers count timeouts, the worker counts calls, restores and saves
            self.stats[name] += 1

    def _run(self, prompt: RenderedPrompt, spec: _Spec, t_submit: float) -> Generation:
        self._count("calls")
        if spec.cancel.is_set():
            raise _Cancelled
        llm = self.llm
        tokens = self.tokenize(prompt.text)
        self._check_fits(tokens, spec)
        static_len = self._static_len(prompt, tokens)
        t0 = time.perf_counter()
        evaluated, how = self._prepare(tokens, static_len, spec.cancel)
        prompt_s = time.perf_counter() - t0
        s = self.settings
        sample_kw = {"temp": s.temperature, "top_k": s.top_k, "top_p": s.top_p, "min_p": 0.0, "repeat_penalty": 1.0}
        llm.set_seed(s.seed)
        ttft: float | None = None
        # 1. reasoning, no grammar, until </think>, EOS or the budget
        think_ids: list[int] = []
        truncated = False
        natural_end = False
        if spec.think_budget > 0:
            for tok in llm.generate(tokens, reset=True, **sample_kw):
                if ttft is None:
                    ttft = time.perf_counter() - t_submit
                if tok == self.think_end_id:
                    natural_end = True
                    break
                if tok == self.eos_id:
                    natural_end = True
                    break
                think_ids.append(tok)
                if len(think_ids) >= spec.think_budget:
                    truncated = True
                    break
                if spec.cancel.is_set():
                    raise _Cancelled
        think_text = llm.detokenize(think_ids, special=False).decode("utf-8", errors="replace")
        close = self._close_text(think_text, natural_end)
        answer_prompt = tokens + think_ids + self.tokenize(close)
        # 2. the answer, under the grammar
        grammar = _llama.compile_grammar(spec.grammar)
        out: list[int] = []
        finished = False
        for tok in llm.generate(answer_prompt, reset=True, grammar=grammar, **sample_kw):
            if ttft is None:
                ttft = time.perf_counter() - t_submit
            if tok == self.eos_id:
                finished = True
                break
            out.append(tok)
            if len(out) >= spec.answer_budget:
                break
            if spec.cancel.is_set():
                raise _Cancelled
        total_s = time.perf_counter() - t_submit
        return self._generation(
            spec, tokens, think_text, think_ids, truncated, out, finished, evaluated, how, prompt_s, ttft, total_s
        )

    def _check_fits(self, tokens: list[int], spec: _Spec) -> None:
        total = len(tokens) + spec.think_budget + spec.answer_budget + GENERATION_RESERVE
        if total > self.settings.n_ctx:
            raise ContextOverflow(
                f"prompt of {len(tokens)} tokens + thinking {spec.think_budget} + answer "
                f"{spec.answer_budget} exceeds n_ctx {self.settings.n_ctx}. Fix: raise [llm] "
                f"n_ctx"
            )

    def _static_len(self, prompt: RenderedPrompt, tokens: list[int]) -> int:
        return _common_prefix(self.tokenize(prompt.prefix_text), tokens) if prompt.prefix_text else 0

    def _generation(
        self,
        spec: _Spec,
        tokens: list[int],
        think_text: str,
        think_ids: list[int],
        truncated: bool,
        out: list[int],
        finished: bool,
        evaluated: int,
        how: str,
        prompt_s: float,
        ttft: float | None,
        total_s: float,
    ) -> Generation:
        answer = self.llm.detokenize(out, special=False).decode("utf-8", errors="replace")
        parsed, error = None, None
        try:
            parsed = parse_answer(spec.kind, answer)
        except ValueError as exc:
            error = f"malformed answer: {exc}" + (
                "" if finished else f" (answer budget of {spec.answer_budget} tokens exhausted)"
            )
        return Generation(
            kind=spec.kind,
            think=think_text,
            answer=answer,
            parsed=parsed,
            error=error,
            think_truncated=truncated,
            n_prompt=len(tokens),
            n_prompt_evaluated=evaluated,
            n_think=len(think_ids),
            n_answer=len(out),
            prompt_s=prompt_s,
            ttft_s=ttft if ttft is not None else total_s,
            total_s=total_s,
            prefix=how,
        )

    def _close_text(self, think_text: str, natural_end: bool) -> str:
        return "</think>\n\n" if natural_end and think_text.endswith("\n") else "\n</think>\n\n"

    # KV-cache management -----------------------------------------------------------------------------------------
    def _eval(self, toks: list[int], cancel: threading.Event) -> None:
        n = self.settings.n_batch
        for i in range(0, len(toks), n):
            if cancel.is_set():
                raise _Cancelled
            self.llm.eval(toks[i : i + n])

    def _prepare(self, tokens: list[int], static_len: int, cancel: threading.Event) -> tuple[int, str]:
        """Leave the context holding ``tokens`` with fresh logits; reuse what is already there or a saved prefix
        state. Returns (tokens evaluated, how the prefix was obtained)."""
        common, evaluated, how = self._static_prefix(tokens, static_len, cancel)
        llm = self.llm
        keep = min(common, len(tokens) - 1)
        evaluated += len(tokens) - keep
        llm.n_tokens = keep
        self._eval(tokens[keep:], cancel)
        return evaluated, how

    def _static_prefix(self, tokens: list[int], static_len: int, cancel: threading.Event) -> tuple[int, int, str]:
        """Leave sequence 0 holding at least the static prefix ``tokens[:static_len]`` (more when the context
        already holds more of ``tokens``): from the context, a saved state, or by evaluating it (and saving its
        state). Returns (tokens of ``tokens`` held, tokens evaluated, how the prefix was obtained)."""
        llm = self.llm
        common = _common_prefix(llm.input_ids[: llm.n_tokens].tolist(), tokens)
        how = "kv" if static_len and common >= static_len else "cold"
        evaluated = 0  # tokens run through the model by this call
        if static_len and common < static_len:
            key = hashlib.sha256(json.dumps(tokens[:static_len]).encode()).digest()
            st = self._states.get(key)
            if st is not None:
                self._states.move_to_end(key)
                _llama.load_seq(llm, st)
                common, how = static_len, "state"
                self._count("state_restores")
            else:
                llm.n_tokens = min(common, static_len)
                evaluated += static_len - llm.n_tokens
                self._eval(tokens[llm.n_tokens : static_len], cancel)
                self._states[key] = _llama.save_seq(llm)
                self._count("state_saves")
                while len(self._states) > self.settings.prefix_states:
                    self._states.popitem(last=False)
                common = static_len
        return common, evaluated, how

    def forget_prefixes(self) -> None:
        """Drop the saved prefix states and the context (the next call runs cold). Runs on the worker, after the
        calls already queued: resetting the context under a generation in flight would corrupt it."""
        self._pool.submit(self._forget).result()

    def _forget(self) -> None:
        self._states.clear()
        self.llm.n_tokens = 0
        for seq in range(1, self.settings.n_seq):
            _llama.seq_rm(self.llm, seq, 0)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self._batch is not None:
            self._batch.close()
        close = getattr(self.llm, "close", None)
        if close is not None:
            close()


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
