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

__all__ = ["LlmRuntime", "PROTOCOL_VERSION"]

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
        kw: dict[str, Any] = {
            "n_ctx": settings.n_ctx,
            "n_gpu_layers": settings.n_gpu_layers,
            "seed": settings.seed,
            "n_batch": settings.n_batch,
            "logits_all": False,
        }
        if settings.n_threads > 0:
            kw["n_threads"] = settings.n_threads
        try:
            self.llm = _llama.load_llama(
                Path(settings.model).expanduser(), cpu_extra_buffers=settings.cpu_extra_buffers, **kw
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

    def _count(self, name: str) -> None:
        with self._stats_lock:  # callers count timeouts, the worker counts calls, restores and saves
            self.stats[name] += 1

    def _run(self, prompt: RenderedPrompt, spec: _Spec, t_submit: float) -> Generation:
        self._count("calls")
        if spec.cancel.is_set():
            raise _Cancelled
        llm = self.llm
        tokens = self.tokenize(prompt.text)
        total = len(tokens) + spec.think_budget + spec.answer_budget + GENERATION_RESERVE
        if total > self.settings.n_ctx:
            raise ContextOverflow(
                f"prompt of {len(tokens)} tokens + thinking {spec.think_budget} + answer "
                f"{spec.answer_budget} exceeds n_ctx {self.settings.n_ctx}. Fix: raise [llm] "
                f"n_ctx"
            )
        static_len = 0
        if prompt.prefix_text:
            pre = self.tokenize(prompt.prefix_text)
            static_len = _common_prefix(pre, tokens)
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
        close = "</think>\n\n" if natural_end and think_text.endswith("\n") else "\n</think>\n\n"
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
        answer = llm.detokenize(out, special=False).decode("utf-8", errors="replace")
        parsed, error = None, None
        try:
            parsed = parse_answer(spec.kind, answer)
        except ValueError as exc:
            error = f"malformed answer: {exc}" + (
                "" if finished else f" (answer budget of {spec.answer_budget} tokens exhausted)"
            )
        total_s = time.perf_counter() - t_submit
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
        keep = min(common, len(tokens) - 1)
        evaluated += len(tokens) - keep
        llm.n_tokens = keep
        self._eval(tokens[keep:], cancel)
        return evaluated, how

    def forget_prefixes(self) -> None:
        """Drop the saved prefix states and the context (the next call runs cold). Runs on the worker, after the
        calls already queued: resetting the context under a generation in flight would corrupt it."""
        self._pool.submit(self._forget).result()

    def _forget(self) -> None:
        self._states.clear()
        self.llm.n_tokens = 0

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
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
