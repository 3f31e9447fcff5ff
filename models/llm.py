"""Layer 2: the GGUF LLM judge on llama-cpp-python — deterministic, grammar-constrained, prefix-cached, fail-closed.

* :func:`verify_gguf` checks a model file before anything loads it (exists, GGUF magic, sha256 — recorded in every
  Decision's ``model_hashes``).
* :class:`LlmRuntime` owns one ``llama_cpp.Llama`` and one worker thread. A call renders the prompt with the chat
  template from the GGUF metadata, restores the KV cache of its static prefix (system prompt + static sections) if
  it has seen it, evaluates the rest, lets the model reason inside ``<think>`` for at most ``think_budget`` tokens
  (closing the block itself when the budget runs out), then generates the answer under a GBNF grammar that only
  admits the role's JSON object. Every call has a deadline: the caller waits at most ``timeout_s``, the worker
  stops at its next token or prompt chunk, and a late call fails closed instead of blocking the gate.
* :class:`VerdictCache` (SQLite) keys each completed answer by (model sha256, prompt text, sampling parameters,
  grammar, budgets, protocol version), so a replay never recomputes a call it has made. Timeouts and errors are
  never cached.
* :class:`Judge` turns the verdict into Layer 2's pass/fail: the model's direction equals the ensemble's and its
  certainty is >= the threshold.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import math
import sqlite3
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fxgate.engine.core.errors import FxgateError
from fxgate.engine.core.hashing import file_sha256
from fxgate.models.prompt import (
    GENERATION_RESERVE,
    ContextOverflow,
    PromptTemplate,
    RenderedPrompt,
    build_prompt,
    load_template,
    prompt_budget,
)

__all__ = [
    "LlmError",
    "ModelFileError",
    "LlmRuntime",
    "LlmSettings",
    "Generation",
    "VerdictCache",
    "Judge",
    "JudgeVerdict",
    "verify_gguf",
    "grammar_for",
    "parse_answer",
    "load_llama",
    "PROTOCOL_VERSION",
]

#: Bump when the generation protocol changes (think handling, grammar, parsing): part of every cache key.
PROTOCOL_VERSION = 1
GGUF_MAGIC = b"GGUF"


class LlmError(FxgateError):
    """An LLM-layer failure; the gate turns it into a fail-closed verdict with this message as the reason."""


class ModelFileError(LlmError, ValueError):
    """A model file that is missing, not GGUF, corrupt, or not the expected one."""


class _Cancelled(Exception):
    pass


# -- the model file -----------------------------------------------------------------------------------------------
_SHA_MEMO: dict[tuple[str, int, int], str] = {}


def verify_gguf(path: str | Path, expected_sha256: str = "") -> str:
    """Check that ``path`` is a readable GGUF file (and, if given, that its sha256 starts with
    ``expected_sha256``); return its sha256. Raises :class:`ModelFileError` naming the file and the fix."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ModelFileError(
            f"{p}: model file not found. Fix: set [llm] model to a GGUF file (`fxgate demo` builds "
            f"the nano model into ~/.cache/fxgate/)"
        )
    st = p.stat()
    with p.open("rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise ModelFileError(
            f"{p}: not a GGUF file (first bytes {magic!r}, expected {GGUF_MAGIC!r}). Fix: "
            f"convert the model to GGUF (fxgate.training.export) or point [llm] model at the "
            f".gguf file"
        )
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    digest = _SHA_MEMO.get(key)
    if digest is None:
        digest = _SHA_MEMO[key] = file_sha256(p)
    if expected_sha256 and not digest.startswith(expected_sha256.lower()):
        raise ModelFileError(
            f"{p}: sha256 {digest[:16]}… does not match the expected {expected_sha256[:16]}… — the "
            f"file is altered or not the model this config was written for"
        )
    return digest


_LOAD_LOCK = threading.Lock()


def load_llama(path: str | Path, *, cpu_extra_buffers: bool = False, **kwargs: Any) -> Any:
    """``llama_cpp.Llama(model_path=path, **kwargs)`` with llama.cpp's extra CPU buffer types (AMX tiles, weight
    repacking) switched off unless ``cpu_extra_buffers``: on some virtual machines the CPU reports AMX but the
    hypervisor does not let a process use it, and the first Q8_0 matrix product dies with SIGILL — a crash no
    fail-closed path can catch. Off costs some CPU speed on bare metal; GPU offload is unaffected."""
    import llama_cpp
    import llama_cpp.llama as _ll

    kwargs.setdefault("verbose", False)
    if cpu_extra_buffers:
        return llama_cpp.Llama(model_path=str(path), **kwargs)
    with _LOAD_LOCK:
        orig = _ll.llama_cpp.llama_model_default_params

        def params() -> Any:
            p = orig()
            p.use_extra_bufts = False
            return p

        _ll.llama_cpp.llama_model_default_params = params
        try:
            return llama_cpp.Llama(model_path=str(path), **kwargs)
        finally:
            _ll.llama_cpp.llama_model_default_params = orig


# -- grammars -----------------------------------------------------------------------------------------------------
def grammar_for(kind: str, *, max_items: int = 3, max_chars: int = 120) -> str:
    """The GBNF grammar of a role's answer: canonical ``json.dumps`` spacing, numbers in [0, 1] with at most four
    decimals, strings of 1..``max_chars`` printable ASCII characters without quotes or backslashes (no escapes, and
    no multi-byte characters that a token boundary could split), 1..``max_items`` list items."""
    if max_items < 1 or max_chars < 1:
        raise ValueError("max_items and max_chars must be >= 1")

    def more(item: str) -> str:
        return f'(", " {item}){{0,{max_items - 1}}}' if max_items > 1 else ""

    common = (
        'num ::= ("0" ("." [0-9] [0-9]? [0-9]? [0-9]?)?) | ("1" (".0" "0"? "0"? "0"?)?)\n'
        f'str ::= "\\"" [\\x20\\x21\\x23-\\x5B\\x5D-\\x7E]{{1,{max_chars}}} "\\""\n'
    )
    if kind == "judge":
        root = (
            'root ::= "{\\"direction\\": " dir ", \\"certainty\\": " num ", \\"reasons\\": [" str '
            + more("str")
            + ' "]}"\n'
            'dir ::= "\\"BUY\\"" | "\\"SELL\\"" | "\\"NONE\\""\n'
        )
    elif kind in ("bull", "bear"):
        head = '"{\\"confidence\\": " num ", \\"arguments\\": ["' if kind == "bull" else '"{\\"arguments\\": ["'
        root = (
            f"root ::= {head} arg " + more("arg") + ' "]}"\narg ::= "{\\"point\\": " str ", \\"strength\\": " num "}"\n'
        )
    elif kind == "risk":
        root = (
            'root ::= "{\\"approve\\": " ("true" | "false") ", \\"size_fraction\\": " num ", \\"reasons\\": [" '
            "str " + more("str") + ' "]}"\n'
        )
    else:
        raise ValueError(f"unknown answer kind {kind!r}")
    return root + common


def _num01(d: dict[str, Any], key: str) -> float:
    v = d.get(key)
    if isinstance(v, bool) or not isinstance(v, int | float) or not (0 <= v <= 1) or not math.isfinite(v):
        raise ValueError(f"{key!r} must be a number in [0, 1], got {v!r}")
    return float(v)


def _strings(d: dict[str, Any], key: str) -> list[str]:
    v = d.get(key)
    if not isinstance(v, list) or not v or not all(isinstance(s, str) and s for s in v):
        raise ValueError(f"{key!r} must be a non-empty list of non-empty strings")
    return v


def parse_answer(kind: str, text: str) -> dict[str, Any]:
    """Parse and validate a role's JSON answer (the grammar already constrains it; this is the second check).
    Raises ValueError with what is wrong."""
    try:
        d = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"answer is not JSON ({exc.msg} at char {exc.pos})") from exc
    if not isinstance(d, dict):
        raise ValueError("answer is not a JSON object")
    if kind == "judge":
        if d.get("direction") not in ("BUY", "SELL", "NONE"):
            raise ValueError(f"direction must be BUY, SELL or NONE, got {d.get('direction')!r}")
        return {"direction": d["direction"], "certainty": _num01(d, "certainty"), "reasons": _strings(d, "reasons")}
    if kind in ("bull", "bear"):
        args = d.get("arguments")
        if not isinstance(args, list) or not args:
            raise ValueError("'arguments' must be a non-empty list")
        out_args = []
        for a in args:
            if not isinstance(a, dict) or not isinstance(a.get("point"), str) or not a["point"]:
                raise ValueError("each argument needs a non-empty 'point'")
            out_args.append({"point": a["point"], "strength": _num01(a, "strength")})
        out: dict[str, Any] = {"arguments": out_args}
        if kind == "bull":
            out = {"confidence": _num01(d, "confidence"), **out}
        return out
    if kind == "risk":
        if not isinstance(d.get("approve"), bool):
            raise ValueError("'approve' must be true or false")
        return {"approve": d["approve"], "size_fraction": _num01(d, "size_fraction"), "reasons": _strings(d, "reasons")}
    raise ValueError(f"unknown answer kind {kind!r}")


# -- the verdict cache --------------------------------------------------------------------------------------------
class VerdictCache:
    """Completed generations on disk (SQLite, one table), keyed by a sha256 of everything that determines them."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS verdicts (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(**parts: Any) -> str:
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM verdicts WHERE key = ?", (key,)).fetchone()
            if row is None:
                self.misses += 1
                return None
            self.hits += 1
        return json.loads(row[0])

    def put(self, key: str, value: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO verdicts VALUES (?, ?)", (key, json.dumps(value)))

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


# -- the runtime --------------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class LlmSettings:
    """How to load and sample a model (the ``[llm]`` config section maps onto this)."""

    model: str
    sha256: str = ""  # expected sha256 prefix; empty: record whatever the file has
    n_ctx: int = 4096
    n_threads: int = 0  # 0: llama.cpp's default
    n_gpu_layers: int = 0
    n_batch: int = 256
    seed: int = 0
    temperature: float = 0.0  # 0: greedy (deterministic); > 0 samples with ``seed``
    top_p: float = 1.0
    top_k: int = 0
    timeout_s: float = 60.0
    chat_template: str = ""  # path to a Jinja file; empty: the GGUF's tokenizer.chat_template
    prefix_states: int = 8  # KV states of static prefixes kept in memory
    cpu_extra_buffers: bool = False  # llama.cpp AMX/repacked CPU weights (see load_llama)


@dataclass
class Generation:
    """One completed call: the reasoning, the raw answer, the parsed answer, and where the time went."""

    kind: str
    think: str
    answer: str
    parsed: dict[str, Any] | None
    error: str | None  # a malformed answer (the call completed, the answer is unusable)
    think_truncated: bool
    n_prompt: int
    n_prompt_evaluated: int  # prompt tokens actually run through the model (the rest came from the KV cache)
    n_think: int
    n_answer: int
    prompt_s: float
    ttft_s: float  # time to the first generated token
    total_s: float
    prefix: str  # "kv" (already in the context), "state" (restored), "cold"
    cached: bool = False  # served from the verdict cache
    prompt_sections: tuple[str, ...] = ()
    dropped_sections: tuple[str, ...] = ()
    template: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Generation:
        d = dict(d)
        for k in ("prompt_sections", "dropped_sections"):
            d[k] = tuple(d.get(k, ()))
        return cls(**d)


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
        try:
            import llama_cpp
        except ImportError as exc:  # pragma: no cover - a core dependency
            raise LlmError("llama-cpp-python is not installed. Fix: pip install llama-cpp-python") from exc
        self._lc = llama_cpp
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
            self.llm = load_llama(Path(settings.model).expanduser(), cpu_extra_buffers=settings.cpu_extra_buffers, **kw)
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
        self._states: OrderedDict[bytes, tuple[int, bytes, Any]] = OrderedDict()  # worker thread only

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
                g = Generation.from_dict(hit)
                g.cached = True
                return g
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
        g.prompt_sections, g.dropped_sections, g.template = prompt.sections, prompt.dropped, prompt.template_id
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
        grammar = self._lc.LlamaGrammar.from_string(spec.grammar, verbose=False)
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
            spec.kind,
            think_text,
            answer,
            parsed,
            error,
            truncated,
            len(tokens),
            evaluated,
            len(think_ids),
            len(out),
            prompt_s,
            ttft if ttft is not None else total_s,
            total_s,
            how,
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
                self._load_seq(st)
                common, how = static_len, "state"
                self._count("state_restores")
            else:
                llm.n_tokens = min(common, static_len)
                evaluated += static_len - llm.n_tokens
                self._eval(tokens[llm.n_tokens : static_len], cancel)
                self._states[key] = self._save_seq()
                self._count("state_saves")
                while len(self._states) > self.settings.prefix_states:
                    self._states.popitem(last=False)
                common = static_len
        keep = min(common, len(tokens) - 1)
        evaluated += len(tokens) - keep
        llm.n_tokens = keep
        self._eval(tokens[keep:], cancel)
        return evaluated, how

    def _save_seq(self) -> tuple[int, bytes, Any]:
        lc, ctx = self._lc, self.llm._ctx.ctx
        size = lc.llama_state_seq_get_size(ctx, 0)
        buf = (ctypes.c_uint8 * size)()
        n = lc.llama_state_seq_get_data(ctx, buf, size, 0)
        return self.llm.n_tokens, bytes(buf[:n]), self.llm.input_ids[: self.llm.n_tokens].copy()

    def _load_seq(self, st: tuple[int, bytes, Any]) -> None:
        lc, llm = self._lc, self.llm
        n_tokens, data, ids = st
        llm._ctx.kv_cache_seq_rm(0, 0, -1)
        buf = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        if lc.llama_state_seq_set_data(llm._ctx.ctx, buf, len(data), 0) == 0:
            raise LlmError("llama.cpp refused a saved prefix state")
        llm.input_ids[:n_tokens] = ids
        llm.n_tokens = n_tokens

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


# -- Layer 2 ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class JudgeVerdict:
    passed: bool
    direction: str | None  # the model's direction, None when it failed
    certainty: float | None
    reason: str
    generation: Generation | None

    def details(self) -> dict[str, Any]:
        g = self.generation
        d: dict[str, Any] = {"role": "judge", "direction": self.direction, "certainty": self.certainty}
        if g is not None:
            d.update(
                {
                    "answer": g.parsed,
                    "raw_answer": g.answer,
                    "think": g.think,
                    "think_truncated": g.think_truncated,
                    "tokens": {
                        "prompt": g.n_prompt,
                        "prompt_evaluated": g.n_prompt_evaluated,
                        "think": g.n_think,
                        "answer": g.n_answer,
                    },
                    "cached": g.cached,
                    "prefix": g.prefix,
                    "template": g.template,
                    "dropped_sections": list(g.dropped_sections),
                }
            )
        return d


class Judge:
    """Layer 2. ``judge(values, direction)`` never raises: every failure is a fail-closed verdict."""

    def __init__(
        self,
        runtime: LlmRuntime,
        *,
        template: str | Path = "judge.v1",
        threshold: float = 0.95,
        think_budget: int = 384,
        answer_budget: int = 512,
        max_reasons: int = 3,
        reason_chars: int = 120,
    ) -> None:
        self.runtime = runtime
        self.template = load_template(template)
        if self.template.output != "judge":
            raise ValueError(f"{self.template.source}: output is {self.template.output!r}, the judge needs 'judge'")
        self.threshold = threshold
        self.think_budget, self.answer_budget = think_budget, answer_budget
        self.grammar = grammar_for("judge", max_items=max_reasons, max_chars=reason_chars)

    def judge(self, values: dict[str, str], direction: str, *, timeout_s: float | None = None) -> JudgeVerdict:
        try:
            prompt = self.runtime.build(
                self.template, values, think_budget=self.think_budget, answer_budget=self.answer_budget
            )
            g = self.runtime.generate(
                prompt,
                kind="judge",
                think_budget=self.think_budget,
                answer_budget=self.answer_budget,
                grammar=self.grammar,
                timeout_s=timeout_s,
            )
        except (LlmError, ContextOverflow) as exc:
            return JudgeVerdict(False, None, None, str(exc), None)
        except Exception as exc:  # noqa: BLE001 - the gate must never see an exception from here
            return JudgeVerdict(False, None, None, f"internal error: {type(exc).__name__}: {exc}", None)
        if g.error is not None or g.parsed is None:
            return JudgeVerdict(False, None, None, g.error or "no answer", g)
        d, c = g.parsed["direction"], g.parsed["certainty"]
        if d != direction:
            reason = f"judge says {d} (certainty {c:.2f}) against the proposed {direction}"
            return JudgeVerdict(False, d, c, reason, g)
        if c < self.threshold:
            return JudgeVerdict(False, d, c, f"judge agrees ({d}) but certainty {c:.2f} < {self.threshold:g}", g)
        return JudgeVerdict(True, d, c, f"judge agrees ({d}), certainty {c:.2f} >= {self.threshold:g}", g)
