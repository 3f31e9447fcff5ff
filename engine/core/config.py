"""Gate configuration: one TOML file, validated into frozen keyword-only dataclasses, hashed into every Decision.

Unknown keys and bad values are errors that name the key (``[l4.params.vpin] quantil``), what is allowed, and the
nearest valid key. ``fxgate config init`` writes :data:`DEFAULT_TOML`, a commented default file.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fxgate.engine.core.errors import FxgateError

__all__ = [
    "GateConfig",
    "L1Config",
    "L2Config",
    "L3Config",
    "LlmConfig",
    "L4Config",
    "l4_hash",
    "SizingConfig",
    "ReplayConfig",
    "InputConfig",
    "CertifyConfig",
    "ServerConfig",
    "ConfigError",
    "DEFAULT_MODULES",
    "DEFAULT_TOML",
    "MAX_HORIZON",
    "cache_dir",
    "NANO_VERSION",
    "NANO_GGUF",
    "nano_dir",
    "parse_config",
    "read_config",
]

#: The largest label/outcome horizon accepted, in bars (a sanity bound: a typo such as 1000000 is refused).
MAX_HORIZON = 10_000

#: The 18 Layer-4 modules in evaluation order. Every module's state is updated on every bar whatever the order; the
#: order decides which verdicts a cheapest-mode bar reads before the first failure: the streaming checks of the
#: market (VPIN, changepoints, regime, disagreement, costs) first, then the outcome statistics, then the drift and
#: bootstrap tests (their verdicts read the last scheduled recompute), SHAP last (native TreeSHAP costs
#: milliseconds and runs only on bars that reach it).
DEFAULT_MODULES = (
    "vpin",
    "bocpd",
    "regime",
    "uncertainty",
    "execution_cost",
    "adverse_selection",
    "robust_kelly",
    "bayesian_sizing",
    "information_edge",
    "icir",
    "certainty_score",
    "conformal_prediction",
    "quantile_prediction",
    "factor_weighting",
    "double_adapt",
    "edge_proof",
    "model_confidence_set",
    "shap",
)


class ConfigError(FxgateError, ValueError):
    """A bad configuration file or value; the message names the key and the fix."""


@dataclass(frozen=True, kw_only=True)
class L1Config:
    enabled: bool = True
    threshold: float = 0.95


@dataclass(frozen=True, kw_only=True)
class LlmConfig:
    """The GGUF model(s) of layers 2 and 3 and how llama.cpp runs them."""

    model: str = ""  # path to a .gguf file; "nano": fxgate's nano model (built on first use, random weights)
    sha256: str = ""  # expected sha256 (prefix) of the model file; empty: record whatever it is
    n_ctx: int = 4096
    n_threads: int = 0  # 0: llama.cpp's default
    n_gpu_layers: int = 0  # -1: every layer on the GPU
    n_batch: int = 256
    seed: int = 0
    temperature: float = 0.0  # 0: greedy, deterministic
    timeout_s: float = 60.0  # per layer: the judge's call, or the whole debate
    cache: str = "auto"  # completed answers on disk: "auto" = $FXGATE_CACHE/llm-verdicts.sqlite; "" disables
    chat_template: str = ""  # a Jinja file overriding the GGUF's tokenizer.chat_template
    on_load_error: str = "raise"  # "raise": the gate refuses to start; "veto": L2/L3 fail closed on every bar
    cpu_extra_buffers: bool = False  # llama.cpp AMX/repacked CPU weights: faster on bare metal, SIGILL on some VMs


@dataclass(frozen=True, kw_only=True)
class L2Config:
    """Layer 2, the LLM judge: passes when its direction equals Layer 1's and its certainty >= threshold. On by
    default: without a model it fails closed (turning it off is an explicit ``enabled = false``)."""

    enabled: bool = True
    threshold: float = 0.95
    template: str = "judge.v2"  # a bundled template name or a path to a .toml template
    think_budget: int = 384  # reasoning tokens before the <think> block is closed for it
    answer_budget: int = 512


@dataclass(frozen=True, kw_only=True)
class L3Config:
    """Layer 3, the debate: bull confidence >= threshold, bear's strongest point <= bear_max_strength, risk approves.
    On by default, like Layer 2."""

    enabled: bool = True
    threshold: float = 0.95
    bear_max_strength: float = 0.05
    rounds: int = 1
    think_budget: int = 256
    answer_budget: int = 512
    bull_model: str = ""  # "": the [llm] model
    bear_model: str = ""
    risk_model: str = ""
    bull_template: str = "bull.v2"
    bear_template: str = "bear.v2"
    risk_template: str = "risk.v2"
    # true: in each round bull and bear see the previous rounds only and decode together (two sequences of one
    # llama.cpp context when they share a model); false: the bear also reads the bull's turn of the same round
    parallel: bool = True


@dataclass(frozen=True, kw_only=True)
class L4Config:
    enabled: bool = True
    modules: tuple[str, ...] = DEFAULT_MODULES
    params: dict[str, dict[str, Any]] = field(default_factory=dict)


def l4_hash(l4: L4Config) -> str:
    """sha256 of the canonical JSON of an ``[l4]`` section (enabled, modules in order, parameters), first 16 hex
    digits: what the judge's prompts (formula catalogue, module lines) depend on. The training data's manifest
    records it (``serving.l4_hash``) beside the section itself, which :func:`fxgate.engine.config.serving_mismatch`
    compares with a served one."""
    blob = json.dumps(dataclasses.asdict(l4), sort_keys=True, default=list).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@dataclass(frozen=True, kw_only=True)
class SizingConfig:
    """``Decision.size`` is a **fraction of capital** (the Kelly convention): the smallest fraction the sizing
    modules suggest (robust Kelly, Bayesian sizing), times ``scale`` (e.g. 0.5 = half Kelly), capped at
    ``max_fraction``. Turning it into lots is the bot's job (it knows the account's equity and leverage)."""

    scale: float = 1.0
    max_fraction: float = 1.0


@dataclass(frozen=True, kw_only=True)
class InputConfig:
    """Plausibility checks on live bars (a bar failing one is refused and does not move the gate's clock)."""

    max_gap_days: float = 30.0  # a bar more than this after the last accepted one is refused; 0 disables the check
    max_future_s: float = 86400.0  # a bar stamped more than this after the wall clock is refused; 0 disables


@dataclass(frozen=True, kw_only=True)
class ReplayConfig:
    train_bars: int = 2000  # bars before the first replay window (the first fit's history)
    window_bars: int = 1000  # the ensemble is refit on all earlier bars before each window
    n_estimators: int = 300
    folds: int = 3
    #: refit early, on every bar so far, when a Layer-4 module recommends it (drift: double_adapt); walk-forward
    #: replays only (a given bundle is never refit), at most once per ``refit_min_bars`` bars
    refit_on_drift: bool = False
    refit_min_bars: int = 250


@dataclass(frozen=True, kw_only=True)
class CertifyConfig:
    """Certified precision (``fxgate calibrate``, engine/calibrate.py): the thresholds on ``path`` are chosen by
    Learn-then-Test so that P(precision >= target) >= 1 - delta over the calibration block; ``target = 0``: the
    thresholds are not certified. The ``n_*``, ``window_*`` and ``method`` keys are what ``fxgate calibrate`` found;
    a certified config's Decisions carry them (``Decision.certification``)."""

    target: float = 0.0  # the precision to certify (a signal is correct when its P&L after the spread is > 0)
    delta: float = 0.05  # the certificate may fail with probability at most delta
    calibration_bars: int = 1000  # the most recent bars before the live window, out of sample for the models
    path: tuple[str, ...] = ("l1",)  # thresholds moved together: "l1", "l2", or a module with a certified threshold
    strictest: float = 0.99  # the path runs from every threshold at `strictest` ...
    loosest: float = 0.5  # ... down to every threshold at `loosest`,
    steps: int = 50  # in this many equal steps, tested strictest first (fixed-sequence testing)
    min_signals: int = 100  # path points with fewer calibration signals are left out (too few to start a sequence)
    monitor_alpha: float = 0.05  # live: signals halt once the precision monitor's e-value reaches 1 / monitor_alpha
    n_outcomes: int = 0  # written by fxgate calibrate: calibration bars with a candidate and an outcome
    n_signals: int = 0  # ... signals at the certified point (non-overlapping when horizon > 1)
    n_correct: int = 0  # ... of them correct after the spread
    window_start: str = ""  # ... the calibration block's first and last bar (ISO-8601 UTC)
    window_end: str = ""
    method: str = ""  # ... how the thresholds were certified
    value: float = 0.0  # ... the certified value of every threshold on the path
    bundle_hash: str = ""  # ... the Layer-1 bundle the calibration scored with (first 16 hex digits)
    symbol: str = ""  # ... and the instrument and timeframe it was calibrated on
    timeframe: str = ""

    @property
    def certified(self) -> bool:
        return self.target > 0 and bool(self.method)


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    """``fxgate serve``: how bars arrive and how state is kept. Not part of :attr:`GateConfig.hash` (it never changes
    a Decision), so a snapshot survives a change of these."""

    #: write a symbol's snapshot after every this many of its accepted bars. The audit log is the write-ahead log
    #: (a restart re-feeds the logged bars after each snapshot), so this trades restart time against throughput,
    #: never safety: a 1.6 MiB snapshot per bar was 55% of the server's time (benchmarks/RESULTS.md)
    snapshot_every: int = 100
    fsync_every: int = 1  # fsync the audit log after every this many appended bars (1: before every answer)
    rotate_bytes: int = 64 * 2**20  # start a new audit file before one would grow past this
    max_body_bytes: int = 2**20  # a larger request body is refused with 413
    max_bars: int = 10_000  # more bars in one request are refused with 413
    unknown_symbols: str = "create"  # a bar for a symbol not in `symbols`: "create" its gate, or "refuse" (404)
    symbols: tuple[str, ...] = ()  # symbols whose gates exist from the start


@dataclass(frozen=True, kw_only=True)
class GateConfig:
    horizon: int = 1  # bars a prediction is held before its outcome is known
    spread: float = 0.0  # cost in price units for bars without a spread column
    pip: float = 0.0001  # price of one pip, for P&L reports
    mode: str = "cheapest"  # "cheapest": stop at the first veto; "full": evaluate every layer (diagnostics)
    l1: L1Config = L1Config()
    llm: LlmConfig = LlmConfig()
    l2: L2Config = L2Config()
    l3: L3Config = L3Config()
    l4: L4Config = L4Config()
    sizing: SizingConfig = SizingConfig()
    replay: ReplayConfig = ReplayConfig()
    input: InputConfig = InputConfig()
    certify: CertifyConfig = CertifyConfig()
    server: ServerConfig = ServerConfig()

    def __post_init__(self) -> None:
        if self.mode not in ("cheapest", "full"):
            raise ConfigError(f'mode = {self.mode!r} is not allowed; use "cheapest" or "full"')
        if not 1 <= self.horizon <= MAX_HORIZON:
            raise ConfigError(f"horizon = {self.horizon}: must be between 1 and {MAX_HORIZON} bars")
        _finite("spread", self.spread, ">= 0", self.spread >= 0, "e.g. 0.00008 for a 0.8-pip EURUSD spread")
        _finite("pip", self.pip, "> 0", self.pip > 0, "0.0001 for most pairs, 0.01 for JPY pairs")
        s = self.sizing
        _finite("[sizing] scale", s.scale, "> 0", s.scale > 0, "1.0 = full Kelly, 0.5 = half Kelly")
        _finite(
            "[sizing] max_fraction",
            s.max_fraction,
            "> 0",
            s.max_fraction > 0,
            "the largest share of capital one signal may use, e.g. 0.02",
        )
        r = self.replay
        for key in ("train_bars", "window_bars", "n_estimators", "folds", "refit_min_bars"):
            if getattr(r, key) < 1:
                raise ConfigError(f"[replay] {key} = {getattr(r, key)}: must be a positive integer")
        i = self.input
        _finite("[input] max_gap_days", i.max_gap_days, ">= 0", i.max_gap_days >= 0, "0 disables the check")
        _finite("[input] max_future_s", i.max_future_s, ">= 0", i.max_future_s >= 0, "0 disables the check")
        if not 0.5 <= self.l1.threshold < 1:
            raise ConfigError(f"[l1] threshold = {self.l1.threshold}: must be in [0.5, 1)")
        for name, layer in (("l2", self.l2), ("l3", self.l3)):
            if not 0 <= layer.threshold <= 1:
                raise ConfigError(f"[{name}] threshold = {layer.threshold}: must be in [0, 1]")
            if layer.think_budget < 0:
                raise ConfigError(f"[{name}] think_budget = {layer.think_budget}: must be >= 0 (0: no reasoning)")
            if layer.answer_budget < 16:
                raise ConfigError(
                    f"[{name}] answer_budget = {layer.answer_budget}: must be >= 16 tokens (the "
                    "default 512 fits every answer the grammar allows)"
                )
        if not 0 <= self.l3.bear_max_strength <= 1:
            raise ConfigError(
                f"[l3] bear_max_strength = {self.l3.bear_max_strength}: must be in [0, 1] (default "
                "0.05 = 1 - threshold)"
            )
        if self.l3.rounds < 1:
            raise ConfigError(f"[l3] rounds = {self.l3.rounds}: must be >= 1 (1 = bull, bear, risk once)")
        lc = self.llm
        if lc.on_load_error not in ("raise", "veto"):
            raise ConfigError(f'[llm] on_load_error = {lc.on_load_error!r}: use "raise" or "veto"')
        _finite("[llm] timeout_s", lc.timeout_s, "> 0", lc.timeout_s > 0, "seconds per LLM layer, e.g. 60")
        _finite("[llm] temperature", lc.temperature, ">= 0", lc.temperature >= 0, "0 = greedy, deterministic")
        if lc.n_ctx < 256:
            raise ConfigError(f"[llm] n_ctx = {lc.n_ctx}: must be >= 256 tokens (default 4096)")
        if lc.n_batch < 1:
            raise ConfigError(f"[llm] n_batch = {lc.n_batch}: must be >= 1 (default 256)")
        cf = self.certify
        _finite("[certify] target", cf.target, "in [0, 1)", 0 <= cf.target < 1, "0 = not certified, e.g. 0.6")
        _finite("[certify] delta", cf.delta, "in (0, 1)", 0 < cf.delta < 1, "e.g. 0.05: a 95% guarantee")
        _finite("[certify] monitor_alpha", cf.monitor_alpha, "in (0, 1)", 0 < cf.monitor_alpha < 1, "e.g. 0.05")
        if not 0.5 <= cf.loosest <= cf.strictest < 1:
            raise ConfigError(
                f"[certify] loosest = {cf.loosest}, strictest = {cf.strictest}: need 0.5 <= loosest <= strictest < 1"
            )
        if cf.steps < 1 or cf.calibration_bars < 10 or cf.min_signals < 1:
            raise ConfigError("[certify] steps and min_signals must be >= 1 and calibration_bars >= 10")
        if not cf.path:
            raise ConfigError('[certify] path is empty: name the thresholds to calibrate, e.g. ["l1"]')
        sv = self.server
        for key, low in (("snapshot_every", 1), ("fsync_every", 1), ("rotate_bytes", 1024), ("max_body_bytes", 256)):
            if getattr(sv, key) < low:
                raise ConfigError(f"[server] {key} = {getattr(sv, key)}: must be an integer >= {low}")
        if sv.max_bars < 1:
            raise ConfigError(f"[server] max_bars = {sv.max_bars}: must be an integer >= 1")
        if sv.unknown_symbols not in ("create", "refuse"):
            raise ConfigError(
                f'[server] unknown_symbols = {sv.unknown_symbols!r}: use "create" (a new symbol gets a gate) or '
                '"refuse" (404 for a symbol not in [server] symbols)'
            )
        l4 = self.l4
        if l4.enabled and not l4.modules:
            raise ConfigError(
                "[l4] modules is empty while [l4] enabled = true: an empty list would pass every "
                "bar unchecked. Fix: list the modules, or turn Layer 4 off with [l4] enabled = false"
            )
        seen: set[str] = set()
        for m in l4.modules:
            if m in seen:
                raise ConfigError(f"[l4] modules: {m!r} is listed twice. Fix: list each module once")
            seen.add(m)
        # module names and parameters are checked against the module registry one level up
        # (fxgate.engine.config.check_modules): the foundation does not know which modules exist

    @property
    def module_settings(self) -> dict[str, Any]:
        """The gate-level settings a module may declare it uses (``CertaintyModule.gate_settings``): one value for the
        whole gate, never set per module."""
        return {
            "horizon": self.horizon,
            "certify_target": self.certify.target,
            "certify_alpha": self.certify.monitor_alpha,
        }

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def hash(self) -> str:
        """sha256 of the canonical JSON of every setting (defaults included) but ``[server]`` (how bars arrive and
        state is stored, never what is decided), first 16 hex digits."""
        d = self.to_dict()
        del d["server"]
        blob = json.dumps(d, sort_keys=True, default=list).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


_SECTIONS = {
    "l1": L1Config,
    "llm": LlmConfig,
    "l2": L2Config,
    "l3": L3Config,
    "l4": L4Config,
    "sizing": SizingConfig,
    "replay": ReplayConfig,
    "input": InputConfig,
    "certify": CertifyConfig,
    "server": ServerConfig,
}

#: Keys that were renamed: the old name gets an error that says what it became and why.
_RENAMED = {("sizing", "max_size"): "max_fraction (Decision.size is a fraction of capital, not instrument units)"}


def _finite(key: str, value: float, rule: str, ok: bool, hint: str) -> None:
    if not (math.isfinite(value) and ok):
        raise ConfigError(f"{key} = {value!r}: must be a finite number {rule} ({hint})")


def _check_keys(where: str, data: dict[str, Any], cls: type) -> None:
    names = [f.name for f in dataclasses.fields(cls)]
    section = next((k for k, v in _SECTIONS.items() if v is cls), "")
    for k in data:
        if (section, k) in _RENAMED:
            raise ConfigError(f"{where}: {k!r} was renamed {_RENAMED[section, k]}")
        if k not in names:
            near = difflib.get_close_matches(k, names, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise ConfigError(f"{where}: unknown key {k!r}{hint} Allowed: {', '.join(names)}")


def _typed(where: str, key: str, value: Any, default: Any) -> Any:
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where} {key} = {value!r}: must be true or false")
        return value
    if isinstance(default, int) and not isinstance(default, bool):
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{where} {key} = {value!r}: must be an integer")
        return value
    if isinstance(default, float):
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise ConfigError(f"{where} {key} = {value!r}: must be a number")
        return float(value)
    if isinstance(default, str) and not isinstance(value, str):
        raise ConfigError(f"{where} {key} = {value!r}: must be a string")
    if isinstance(default, tuple):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where} {key} = {value!r}: must be a list of names")
        return tuple(value)
    return value


def _build(where: str, cls: type, data: dict[str, Any]) -> Any:
    _check_keys(where, data, cls)
    defaults = cls()
    kwargs = {}
    for k, v in data.items():
        if k == "params" and cls is L4Config:
            if not isinstance(v, dict) or not all(isinstance(x, dict) for x in v.values()):
                raise ConfigError(f"{where} params: use [l4.params.<module>] tables")
            kwargs[k] = {m: dict(p) for m, p in v.items()}
        else:
            kwargs[k] = _typed(where, k, v, getattr(defaults, k))
    return cls(**kwargs)


def parse_config(data: dict[str, Any], where: str = "config") -> GateConfig:
    """A GateConfig from parsed TOML; every key and value checked except module names and parameters (see
    :func:`fxgate.engine.config.config_from_dict`, which adds those)."""
    top = {k: v for k, v in data.items() if k not in _SECTIONS}
    _check_keys(where, {**top, **{k: None for k in data if k in _SECTIONS}}, GateConfig)
    kwargs: dict[str, Any] = {}
    base = GateConfig.__dataclass_fields__
    for k, v in top.items():
        kwargs[k] = _typed(where, k, v, base[k].default)
    for sec, cls in _SECTIONS.items():
        if sec in data:
            if not isinstance(data[sec], dict):
                raise ConfigError(f"{where}: {sec} must be a table ([{sec}])")
            kwargs[sec] = _build(f"{where} [{sec}]", cls, data[sec])
    try:
        return GateConfig(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def cache_dir() -> Path:
    """fxgate's cache: the nano model, the LLM verdict cache. ``$FXGATE_CACHE``, default ``~/.cache/fxgate``."""

    return Path(os.environ.get("FXGATE_CACHE", "~/.cache/fxgate")).expanduser()


#: The nano test model (built by ``fxgate.training.nano``) lives in ``cache_dir()/nano-v{NANO_VERSION}``.
NANO_VERSION = 1
NANO_GGUF = "nano-q8_0.gguf"


def nano_dir() -> Path:
    """Where the nano model is built (``manifest.json`` + :data:`NANO_GGUF`); serving reads it, training writes it."""
    return cache_dir() / f"nano-v{NANO_VERSION}"


def read_config(path: str | Path | None) -> GateConfig:
    """Read a TOML gate config (None: all defaults); module names and parameters are not checked here (see
    :func:`fxgate.engine.config.load_config`)."""
    if path is None:
        return GateConfig()
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read ({exc.strerror}). Fix: `fxgate config init {p}` writes a default") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{p}:{line}: not UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start}); TOML files are "
            "UTF-8. Fix: re-save the file as UTF-8"
        ) from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML ({exc})") from exc
    return parse_config(data, str(p))


DEFAULT_TOML = """\
# fxgate gate configuration. Every key is optional; this file lists the defaults.
# A signal is emitted only when every *enabled* layer passes; disabled layers are reported as such.

horizon = 1          # bars a prediction is held before its outcome is known (and the trade is closed)
spread = 0.0         # cost in price units for bars without a spread column (EURUSD 0.8 pip = 0.00008)
pip = 0.0001         # price of one pip, for P&L reports (0.01 for JPY pairs)
mode = "cheapest"    # "cheapest": stop at the first veto; "full": evaluate every layer for diagnostics

[l1]                 # XGBoost + LightGBM + CatBoost must agree, each calibrated confidence >= threshold
enabled = true
threshold = 0.95

[llm]                # the GGUF model of layers 2 and 3, run by llama-cpp-python
model = ""           # path to a .gguf file; "nano" = fxgate's nano test model (random weights: plumbing only)
sha256 = ""          # expected sha256 (prefix) of the file; empty = record whatever it is
n_ctx = 4096
n_threads = 0        # 0 = llama.cpp's default
n_gpu_layers = 0     # -1 = every layer on the GPU
n_batch = 256
seed = 0
temperature = 0.0    # 0 = greedy: the same input gives the same verdict
timeout_s = 60.0     # per layer (the judge's call; the whole debate); a late answer is a veto
cache = "auto"       # completed answers, so replays never recompute: "auto" = $FXGATE_CACHE/llm-verdicts.sqlite
                     # ($FXGATE_CACHE defaults to ~/.cache/fxgate); a path; or "" to disable
chat_template = ""   # a Jinja file overriding the GGUF's tokenizer.chat_template
on_load_error = "raise"  # "raise": refuse to start on a missing/corrupt model; "veto": L2/L3 fail closed
cpu_extra_buffers = false  # llama.cpp AMX/repacked CPU weights: faster on bare metal, SIGILL on some VMs

[l2]                 # LLM judge: same direction as Layer 1 and certainty >= threshold
enabled = true       # without [llm] model it vetoes every bar (fails closed); "false" turns it off explicitly
threshold = 0.95
template = "judge.v2"
think_budget = 384   # reasoning tokens; then the <think> block is closed and the JSON answer is generated
answer_budget = 512

[l3]                 # debate: bull confidence >= threshold, bear's strongest point <= bear_max_strength,
enabled = true       # and the risk manager approves (it may cut the size, never raise it)
threshold = 0.95
bear_max_strength = 0.05
rounds = 1
think_budget = 256
answer_budget = 512
bull_model = ""      # "" = the [llm] model; each role may use its own GGUF
bear_model = ""
risk_model = ""
bull_template = "bull.v2"
bear_template = "bear.v2"
risk_template = "risk.v2"
parallel = true      # bull and bear see the earlier rounds only and run at once (2 sequences of one context when
                     # they share a model); false = sequential: the bear also reads the bull's turn of its round

[l4]                 # certainty modules, evaluated in this order; every listed module must pass
enabled = true
modules = ["vpin", "bocpd", "regime", "uncertainty", "execution_cost", "adverse_selection", "robust_kelly",
           "bayesian_sizing", "information_edge", "icir", "certainty_score", "conformal_prediction",
           "quantile_prediction", "factor_weighting", "double_adapt", "edge_proof", "model_confidence_set", "shap"]

# Module parameters: one [l4.params.<name>] table per module. `fxgate config init` lists every module's pass
# rule and default table at the end of the file (vpin's rule = "absolute", absolute = 0.3 is the original
# design's VPIN < 0.3).

[sizing]             # Decision.size is a fraction of capital: the smallest fraction the sizing modules
scale = 1.0          # (robust_kelly, bayesian_sizing) suggest, times scale (0.5 = half Kelly),
max_fraction = 1.0   # capped at max_fraction

[input]              # plausibility of live bars: a bar failing a check is refused and does not move the clock
max_gap_days = 30.0  # refuse a bar more than this after the last accepted one (a far-future typo); 0 = off
max_future_s = 86400.0  # refuse a bar stamped more than this after the wall clock; 0 = off

[replay]             # walk-forward: refit the ensemble on all earlier bars before each window
train_bars = 2000
window_bars = 1000
n_estimators = 300
folds = 3
refit_on_drift = false  # also refit early when a module recommends it (double_adapt: drift), at most once per
refit_min_bars = 250    # this many bars; the report lists every refit and why

[certify]            # certified precision: `fxgate calibrate` chooses the thresholds on `path` so that
target = 0.0         # P(precision >= target) >= 1 - delta over the calibration block (Learn-then-Test);
delta = 0.05         # target = 0: the thresholds above are not certified
calibration_bars = 1000  # the most recent bars before the live window (out of sample for the models)
path = ["l1"]        # thresholds moved together: "l1", "l2", "certainty_score"
strictest = 0.99     # the path: every threshold on it from strictest down to loosest in `steps` equal steps,
loosest = 0.5        # tested strictest first (fixed-sequence testing); the loosest certified point is chosen
steps = 50
min_signals = 100    # points with fewer calibration signals are left out: a sequence started on 37 signals ends
                     # on their noise (which points are left out depends on the scores only, not the outcomes)
monitor_alpha = 0.05 # live: signals halt when the precision monitor's e-value reaches 1 / monitor_alpha
n_outcomes = 0       # the rest is written by fxgate calibrate: what was certified, on what
n_signals = 0
n_correct = 0
window_start = ""
window_end = ""
method = ""
value = 0.0          # the certified value of every path threshold
bundle_hash = ""     # the certificate holds only for this bundle, symbol and timeframe, and these thresholds:
symbol = ""          # a Decision made with anything else carries no certification
timeframe = ""

[server]             # fxgate serve (not part of the config hash: these never change a Decision)
snapshot_every = 100 # write a symbol's state snapshot after every this many of its bars (atomic; the audit log
                     # holds the bars since, and a restart re-feeds them: no accepted bar is lost either way;
                     # 1 = a 1.6 MiB write per bar, 4x slower; larger = a longer re-feed on restart)
fsync_every = 1      # fsync the audit log every this many bars (1: before each answer; k: a power cut may lose
                     # the last k-1 answered bars, a kill -9 none)
rotate_bytes = 67108864  # start a new audit file before one would pass this size (64 MiB)
max_body_bytes = 1048576 # a larger request is refused with 413
max_bars = 10000     # more bars in one request are refused with 413
unknown_symbols = "create"  # a bar for a symbol not in `symbols`: "create" its gate, or "refuse" (404)
symbols = []         # symbols whose gates exist from the start
"""
