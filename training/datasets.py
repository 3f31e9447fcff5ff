"""Training data from the trader's bars, split by time so that nothing from the future reaches training.

From any number of bar files (:func:`fxgate.engine.load_bars`), :func:`build` writes, per split
(``train``/``val``/``test``):

* ``features.jsonl`` — *feature examples*: a bar's key features (computed by :mod:`fxgate.models.features`, the code
  the gate serves with) and what each one means;
* ``scenarios.jsonl`` — *trade scenarios*: the exact prompt the live judge receives (the ``judge`` template and
  :func:`fxgate.models.prompt.prompt_values`), and as completion a ``<think>`` block built **only from that
  prompt's inputs** followed by the JSON verdict the realized outcome supports: BUY/SELL when the close ``horizon``
  bars later moved by more than the spread that way, NONE when the move did not cover costs;
* ``dpo.jsonl`` — *DPO pairs*: the same prompt; chosen = that verdict; rejected = the opposite trade, or — when the
  right answer is to stay out — the proposed trade, stated with 0.99 certainty (the over-confident wrong answer);
* ``train/formulas.jsonl`` — the formula-knowledge conversations of :mod:`fxgate.training.formulas` (timeless, so
  training only); ``train/imported_sft.jsonl`` / ``imported_dpo.jsonl`` — the trader's own JSONL
  (:mod:`fxgate.training.imports`), when given.

**Certainty targets are honest base rates.** The certainty in a target verdict is the frequency, on the training
split, with which that answer was right given the proposal: a model trained on these targets learns to say what
the data supports (about 0.45 on EURUSD H1), not 0.99. A model can only earn the 0.95 the gate asks for from
evidence that is actually there.

**Time split.** One calendar cut for all files (so a correlated pair cannot carry test-period information into
training): ``train`` < T1 ≤ ``val`` < T2 ≤ ``test``. In every file a training example needs its label window (``i +
horizon``) strictly before the first bar at or after T1; validation and test start ``embargo`` (≥ ``horizon``) bars
after their cut. Features use past bars only. ``manifest.json`` records sources (sha256, bars, date ranges), the
cuts, and counts per split, kind and source.

**Layer 1 out of sample, in every split.** With a fitted bundle (``--bundle``, refused if its training labels
reach T1, or if its timeframe or label horizon differ from the data's) the proposal a scenario asks about is Layer
1's candidate direction and the prompt shows its calibrated probabilities. Validation and test scenarios get the
bundle's. Training scenarios get **out-of-fold** ones (:func:`oof_schedule`): the training part of each file is cut
into the bundle's walk-forward blocks (:func:`fxgate.models.ensemble.purged_walk_forward`), and each block is
predicted by a model fitted (:meth:`~fxgate.models.ensemble.TreeEnsemble.fit`, the bundle's label spec and config)
only on bars that end ``embargo`` bars before the block starts — never by a model that saw the label it teaches, so
training prompts look like the out-of-sample ones served live. Training bars before the first block get no
scenario. ``meta.layer1`` names the model of every scenario and the last bar it saw. Without a bundle the proposal
is the direction of the last bar's move, a naive proposal that keeps the prompt format identical to serving.

**The served prompt.** Every scenario keeps the template ``values``; SFT, DPO and the evaluation render them with
:func:`served_prompt` under the live judge's budget (``n_ctx`` minus the thinking and answer budgets, whole sections
dropped least important first), with the served model's tokenizer — or the builder does it when given that
tokenizer.

**Nothing half-written.** Every input is read and checked first (bars, bundle, JSONL with its dates and sizes,
tokenizer); the files are written into a temporary directory that replaces ``out`` in one rename at the end, so a
failure leaves a previous build in ``out`` byte for byte. ``manifest.json`` lists every file with its size and
sha256 (``fxgate train verify`` checks a copy).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fxgate.engine.core.errors import FxgateError
from fxgate.engine.core.hashing import file_sha256

__all__ = [
    "build",
    "SplitSpec",
    "DatasetError",
    "DatasetWarning",
    "think_text",
    "answer_text",
    "SPLITS",
    "KINDS",
    "served_prompt",
    "data_budget",
    "oof_schedule",
    "is_data_manifest",
    "DATA_MANIFEST_KIND",
]

SPLITS = ("train", "val", "test")
KINDS = ("features", "scenarios", "dpo")
#: ``manifest.json["kind"]`` of a data directory (a run directory's manifest has ``fxgate_manifest``)
DATA_MANIFEST_KIND = "fxgate-train-data"
#: modules whose verdicts the scenarios show (SHAP is left out: 20 ms per bar, and it explains Layer 1 only)
DATASET_MODULES = (
    "vpin",
    "bocpd",
    "regime",
    "uncertainty",
    "execution_cost",
    "adverse_selection",
    "robust_kelly",
    "bayesian_sizing",
)
MEANINGS = {
    "ROC5": "close 5 bars ago over the current close (above 1: the price fell)",
    "ROC20": "close 20 bars ago over the current close (above 1: the price fell)",
    "MA20": "20-bar mean close over the current close",
    "STD20": "20-bar standard deviation of the close, over the close",
    "RSV20": "position of the close in the 20-bar high-low range (0 = low, 1 = high)",
    "CORR20": "correlation of close and log volume over 20 bars",
    "CNTP20": "share of the last 20 bars that closed up",
    "SUMP20": "share of the 20-bar absolute movement that was upward",
    "RV_D": "realized variance of log returns over the last day",
    "RV_W": "realized variance of log returns over the last week",
    "BV_D": "bipower variation over the last day (variance without jumps)",
    "BNS_Z": "Barndorff-Nielsen-Shephard jump statistic (above 3: a jump in the last day)",
    "LM": "Lee-Mykland jump statistic of the last return",
    "SESS_ASIA": "1 in the Asian session",
    "SESS_LONDON": "1 in the London session",
    "SESS_NY": "1 in the New York session",
    "SPREAD_REL": "spread over the close",
}


class DatasetError(FxgateError, ValueError):
    """Bad input to a dataset builder; the message names the file/line/field and the fix."""


def _serving_defaults() -> tuple[int, int, int]:
    from fxgate.engine.config import L2Config, LlmConfig

    return LlmConfig().n_ctx, L2Config().think_budget, L2Config().answer_budget


@dataclass(frozen=True, kw_only=True)
class SplitSpec:
    horizon: int = 1
    val_frac: float = 0.15
    test_frac: float = 0.15
    embargo: int = 0  # bars; 0 = the horizon
    spread: float = 0.0  # price units, for bars without a spread column
    #: the serving budget of the judge the data is for ([llm] n_ctx, [l2] think_budget and answer_budget)
    n_ctx: int = field(default_factory=lambda: _serving_defaults()[0])
    think_budget: int = field(default_factory=lambda: _serving_defaults()[1])
    answer_budget: int = field(default_factory=lambda: _serving_defaults()[2])

    def __post_init__(self) -> None:
        if self.n_ctx < 256 or self.think_budget < 0 or self.answer_budget < 16:
            raise DatasetError(
                f"n_ctx = {self.n_ctx}, think_budget = {self.think_budget}, answer_budget = "
                f"{self.answer_budget}: need n_ctx >= 256, think_budget >= 0 and answer_budget >= 16 "
                f"(the [llm] and [l2] rules)"
            )
        if self.n_ctx - self.think_budget - self.answer_budget < 64:
            raise DatasetError(
                f"n_ctx = {self.n_ctx} leaves no room for a prompt after the thinking "
                f"({self.think_budget}) and answer ({self.answer_budget}) budgets. Fix: a larger "
                f"n_ctx or smaller budgets"
            )
        if self.horizon < 1:
            raise DatasetError(f"horizon = {self.horizon}: must be >= 1 bar")
        if not (0 < self.val_frac < 1 and 0 < self.test_frac < 1 and self.val_frac + self.test_frac < 0.9):
            raise DatasetError("val_frac and test_frac must be in (0, 1) with val_frac + test_frac < 0.9")
        if self.embargo and self.embargo < self.horizon:
            raise DatasetError(
                f"embargo = {self.embargo} bars is shorter than the horizon ({self.horizon}): "
                f"labels would overlap the next split. Fix: embargo >= horizon (or 0 for the "
                f"horizon)"
            )

    @property
    def gap(self) -> int:
        return max(self.embargo, self.horizon)


def _fmt(x: float) -> str:
    from fxgate.models.prompt import fmt_num

    return fmt_num(x, 4)


def think_text(features: dict[str, float], modules: Sequence[dict[str, Any]], proposal: str) -> str:
    """The reasoning of a scenario's completion: built from the prompt's inputs only, never from the outcome."""
    f = features
    parts = [f"The proposal is {proposal}."]
    roc5, roc20 = f.get("ROC5", math.nan), f.get("ROC20", math.nan)
    if math.isfinite(roc5) and math.isfinite(roc20):
        m5 = "fell" if roc5 > 1 else "rose"
        m20 = "fell" if roc20 > 1 else "rose"
        parts.append(f"Over 5 bars the price {m5} (ROC5 {_fmt(roc5)}) and over 20 bars it {m20} (ROC20 {_fmt(roc20)}).")
    rsv = f.get("RSV20", math.nan)
    if math.isfinite(rsv):
        parts.append(f"The close sits at {_fmt(rsv)} of its 20-bar range.")
    bns = f.get("BNS_Z", math.nan)
    if math.isfinite(bns):
        parts.append(f"BNS_Z is {_fmt(bns)}: {'a recent jump' if bns > 3 else 'no sign of a jump'}.")
    failed = [m["module"] for m in modules if not m["passed"]]
    passed = [m["module"] for m in modules if m["passed"]]
    if modules:
        parts.append(f"Checks passed: {', '.join(passed) or 'none'}; failed: {', '.join(failed) or 'none'}.")
    parts.append("Short-horizon FX direction is close to a coin flip, and the spread must be covered.")
    return " ".join(parts)


def answer_text(direction: str, certainty: float, reasons: Sequence[str]) -> str:
    """The JSON verdict exactly as the judge's grammar produces it (``json.dumps`` spacing, 4 decimals at most)."""
    rs = [r.encode("ascii", "replace").decode().replace('"', "'").replace("\\", "/")[:120] for r in reasons][:3]
    return json.dumps({"direction": direction, "certainty": round(float(certainty), 4), "reasons": rs or ["no edge"]})


def _reasons(features: dict[str, float], modules: Sequence[dict[str, Any]]) -> list[str]:
    out = []
    for k in ("ROC5", "RSV20", "SUMP20"):
        v = features.get(k, math.nan)
        if math.isfinite(v):
            out.append(f"{k} {_fmt(v)}")
    failed = [m["module"] for m in modules if not m["passed"]]
    out = ["; ".join(out) or "features unavailable"]
    out.append(f"failing checks: {', '.join(failed)}" if failed else "all shown checks pass")
    return out


@dataclass
class _Row:
    src: int
    i: int
    ts: int
    label_end_ts: int
    values: dict[str, str]  # prompt values
    features: dict[str, float]
    modules: list[dict[str, Any]]
    proposal: str
    target: str  # BUY / SELL / NONE by the realized outcome
    move: float  # close[i + h] - close[i]
    spread: float
    probs: dict[str, float] | None
    l1: dict[str, Any] | None  # which Layer-1 model produced ``probs`` and the last bar it saw


@dataclass(frozen=True)
class _L1Model:
    """A Layer-1 model the dataset gate switches to at bar ``start`` of a file."""

    start: int
    ens: Any
    info: dict[str, Any]


def oof_schedule(
    bars: Any, train_end: int, ens: Any, embargo: int, say: Callable[[str], None] | None = None
) -> list[_L1Model]:
    """Out-of-fold Layer-1 models for the training part ``bars[:train_end]`` of one file.

    The blocks are those of :func:`fxgate.models.ensemble.purged_walk_forward` (the bundle's ``folds`` and
    ``test_frac``) over the training part; the model of a block starting at bar ``a`` is
    :meth:`TreeEnsemble.fit <fxgate.models.ensemble.TreeEnsemble.fit>` (the bundle's label spec and config) on
    ``bars[:a - embargo]`` — so every bar it saw, label windows included, is at least ``embargo`` bars before the
    first bar it predicts. Training bars before the first block get no model (and no scenario)."""
    from fxgate.models.ensemble import TreeEnsemble, purged_walk_forward
    from fxgate.models.labels import make_labels

    cfg, spec = ens.config, ens.label_spec
    head = bars[:train_end]
    lab = make_labels(head, spec)
    folds = purged_walk_forward(np.ones(train_end, dtype=bool), lab.end, cfg.folds, cfg.test_frac, embargo)
    out = []
    for k, (_, test) in enumerate(folds):
        if len(test) == 0:
            continue
        a = int(test[0])
        c = a - embargo
        if c - 61 - spec.horizon < 200:
            raise DatasetError(
                f"out-of-fold Layer-1 probabilities: block {k + 1} of the training split starts at "
                f"bar {a}, leaving {max(0, c)} bars to fit its model on (need >= {261 + spec.horizon})"
                f". Fix: more bars before the validation cut, or a bundle fitted with fewer folds or "
                f"a smaller test_frac"
            )
        if say:
            say(f"out-of-fold Layer-1 model {k + 1}/{len(folds)}: fit on bars 0..{c - 1}, predicts bars from {a}")
        m = TreeEnsemble()
        m.fit(head[:c], spec, cfg, evaluate=False)
        info = {
            "model": f"oof-{k + 1}",
            "block_first_ts": int(bars.ts[a]),
            "block_last_ts": int(bars.ts[test[-1]]),
            "fit_bars": c,
            "fit_last_ts": int(bars.ts[c - 1]),
            "bundle_hash": m.bundle_hash[:16],
        }
        out.append(_L1Model(a, m, info))
    return out


def _rows_for(
    bars: Any,
    src: int,
    spec: SplitSpec,
    models: Sequence[_L1Model],
    with_l1: bool,
    progress: Callable[[int], None] | None,
) -> list[_Row]:
    """Run the gate over one file and collect the scenarios. ``models``: the Layer-1 model to switch to at each
    start bar (none before the first: those bars get no scenario when ``with_l1``)."""
    from fxgate.engine.config import GateConfig, L1Config, L2Config, L3Config, L4Config
    from fxgate.engine.gate import Gate
    from fxgate.models.ensemble import MODEL_NAMES
    from fxgate.models.prompt import KEY_FEATURES, prompt_values

    cfg = GateConfig(
        horizon=spec.horizon,
        spread=spec.spread,
        mode="full",
        l1=L1Config(enabled=with_l1),
        l2=L2Config(enabled=False),
        l3=L3Config(enabled=False),
        l4=L4Config(modules=DATASET_MODULES),
    )
    gate = Gate(cfg, None, timeframe=bars.timeframe, symbol=bars.symbol)
    switches = {m.start: m for m in models}
    current: _L1Model | None = None
    gate.warm_up()
    idx = {n: i for i, n in enumerate(gate.features.names)}
    close = np.asarray(bars.close, dtype=float)
    rows: list[_Row] = []
    n, h = len(bars), spec.horizon
    for i in range(n):
        if i in switches:
            current = switches[i]
            gate.set_ensemble(current.ens)
        b = bars[i]
        d = gate.on_bar(b)
        if d.first_veto == "input":
            raise DatasetError(
                f"{bars.symbol} bar {i} ({np.datetime64(int(b.ts), 'ns')}): the gate refused it "
                f"({d.layers[0].reason}). Fix: repair the file (--policy repair) or drop the bar"
            )
        if progress and (i % 250 == 0 or i == n - 1):
            progress(i + 1)
        if i + h >= n or i < 1:
            continue
        feats_all = gate.last_features
        feats = {k: float(feats_all[idx[k]]) for k in KEY_FEATURES}
        if not all(math.isfinite(v) for k, v in feats.items() if k not in ("LM", "BNS_Z", "SPREAD_REL")):
            continue  # windows not full yet
        mods = [dict(m) for m in d.layer("L4").details]
        probs = None
        if with_l1:
            pd_ = [x_["p_up"] for x_ in d.layer("L1").details]
            if current is None or len(pd_) != 3 or not all(math.isfinite(p) for p in pd_):
                continue
            probs = dict(zip(MODEL_NAMES, pd_, strict=True))
            up = [p >= 0.5 for p in pd_]
            if all(up):
                proposal = "BUY"
            elif not any(up):
                proposal = "SELL"
            else:
                continue  # no candidate: the judge is never asked
        else:
            step = close[i] - close[i - 1]
            if step == 0:
                continue
            proposal = "BUY" if step > 0 else "SELL"
        spread = float(b.spread) if b.spread is not None else spec.spread
        move = float(close[i + h] - close[i])
        target = "BUY" if move > spread else ("SELL" if -move > spread else "NONE")
        vals = prompt_values(
            symbol=bars.symbol,
            timeframe=bars.timeframe,
            ts_ns=int(b.ts),
            bar={"open": b.open, "high": b.high, "low": b.low, "close": b.close, "volume": b.volume, "spread": spread},
            direction=proposal,
            horizon=h,
            probs=probs,
            features=feats,
            modules=mods,
        )
        rows.append(
            _Row(
                src,
                i,
                int(b.ts),
                int(bars.ts[i + h]),
                vals,
                feats,
                mods,
                proposal,
                target,
                move,
                spread,
                probs,
                dict(current.info) if with_l1 and current else None,
            )
        )
    gate.close()
    return rows


def _certainty_table(train: list[_Row]) -> dict[str, float]:
    """P(answer is right | proposal) on the training split, for the three possible answers."""
    n = max(1, len(train))
    same = sum(r.target == r.proposal for r in train) / n
    none = sum(r.target == "NONE" for r in train) / n
    return {"same": same, "none": none, "opposite": max(0.0, 1 - same - none)}


def _check_out(out: Path) -> None:
    """``out`` must be new, empty, or a previous ``fxgate train data`` build (which the new one replaces whole)."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise DatasetError(f"--out {out}: exists and is not a directory. Fix: choose a new directory")
    if out.is_dir() and any(out.iterdir()) and not is_data_manifest(_read_json(out / "manifest.json")):
        raise DatasetError(
            f"--out {out}: the directory holds files that are not a `fxgate train data` build; "
            f"the build replaces the whole directory. Fix: choose a new or empty directory"
        )


def _read_json(p: Path) -> Any:
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_data_manifest(m: Any) -> bool:
    """Whether a parsed ``manifest.json`` is one written by :func:`build` (a data directory, not a run)."""
    return isinstance(m, dict) and (m.get("kind") == DATA_MANIFEST_KIND or ("cuts" in m and "counts" in m))


def _load_tokenizer(spec: str | Path) -> tuple[str, str, str, Callable[[str], int], str]:
    """(chat template, BOS, EOS, token counter, sha256) of a Hugging Face tokenizer directory or a GGUF file."""
    from fxgate.engine.core.hashing import file_sha256 as _sha

    p = Path(spec).expanduser()
    if p.is_file() and p.suffix == ".gguf":
        from fxgate.models.llm import load_llama

        llm = load_llama(p, vocab_only=True)
        ct = llm.metadata.get("tokenizer.chat_template")
        if not ct:
            raise DatasetError(f"--tokenizer {p}: the GGUF has no tokenizer.chat_template")

        def piece(t: int) -> str:
            return "" if t is None or t < 0 else llm.detokenize([t], special=True).decode("utf-8", "replace")

        return (
            ct,
            piece(llm.token_bos()),
            piece(llm.token_eos()),
            lambda text: len(llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)),
            _sha(p),
        )
    if (p / "tokenizer.json").is_file():
        from fxgate.training.export import load_tokenizer

        tok = load_tokenizer(p)
        if not tok.chat_template:
            raise DatasetError(f"--tokenizer {p}: the tokenizer has no chat_template")
        return (
            tok.chat_template,
            tok.bos_token or "",
            tok.eos_token or "",
            lambda text: len(tok(text, add_special_tokens=False)["input_ids"]),
            _sha(p / "tokenizer.json"),
        )
    raise DatasetError(
        f"--tokenizer {p}: neither a .gguf file nor a directory with tokenizer.json. Fix: pass the "
        f"model that will be served (its GGUF) or its Hugging Face directory"
    )


def build(
    bar_files: Sequence[str | Path],
    out: str | Path,
    spec: SplitSpec,
    *,
    bundle: str | Path | None = None,
    jsonl: Sequence[str | Path] = (),
    skip_bad: bool = False,
    load_kwargs: dict[str, Any] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    tokenizer: str | Path | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Write the three splits and ``manifest.json`` into ``out``; return the manifest. ``progress(file, bars done,
    bars in the file)`` is called as bars are processed.

    Every input (bar files, bundle, JSONL, tokenizer) is read and checked before anything is written; the files are
    written into a temporary directory beside ``out`` that replaces ``out`` at the end, so a failed build leaves
    ``out`` exactly as it was. With ``tokenizer`` (the served model's GGUF or HF directory), each prompt is
    stored as the live judge would send it under ``spec``'s serving budget (sections dropped, least important
    first); without, every section is stored and SFT, DPO and ``fxgate train eval`` apply that budget with the
    model's own tokenizer (every scenario carries its template ``values`` for that)."""
    from fxgate.engine.core.version import __version__
    from fxgate.engine.loader import load_bars
    from fxgate.models.features import FEATURE_ENGINE_VERSION
    from fxgate.models.prompt import load_template
    from fxgate.training.imports import read_jsonl, write_imported

    say = log or (lambda _msg: None)
    if not bar_files:
        raise DatasetError("no bar files given. Fix: --bars FILE (repeat for several pairs)")
    out = Path(out).absolute()
    if Path.cwd().resolve().is_relative_to(out.resolve()):
        raise DatasetError(
            f"--out {out}: the current directory or one above it; the build replaces --out whole. "
            f"Fix: a new directory, e.g. --out data/"
        )
    _check_out(out)
    tpl = load_template("judge.v1")
    # -- read and check every input before any work ------------------------------------------------------------
    loaded = []
    seen: dict[str, Path] = {}
    for f in bar_files:
        p = Path(f)
        bars = load_bars(p, **(load_kwargs or {}))
        if len(bars) < 500:
            raise DatasetError(f"{p}: {len(bars)} bars; a time split with an embargo needs at least 500")
        sha = file_sha256(p)
        if sha in seen:
            raise DatasetError(
                f"{p}: the same bars as {seen[sha]} (sha256 {sha[:12]}…); each bar would be a "
                f"training example twice. Fix: give each file once"
            )
        seen[sha] = p
        loaded.append((p, bars, sha))
    ens = None
    if bundle is not None:
        from fxgate.models.ensemble import TreeEnsemble

        ens = TreeEnsemble.load(bundle)
        for p, bars, _ in loaded:
            if ens.timeframe and bars.timeframe != ens.timeframe:
                raise DatasetError(
                    f"{bundle}: the bundle was fitted on {ens.timeframe} bars, {p} has "
                    f"{bars.timeframe} bars. Fix: a bundle fitted on {bars.timeframe} bars"
                )
        if ens.label_spec.horizon != spec.horizon:
            raise DatasetError(
                f"{bundle}: the bundle predicts {ens.label_spec.horizon} bar(s) ahead, the scenarios "
                f"ask about {spec.horizon}. Fix: --horizon {ens.label_spec.horizon}, or a bundle "
                f"fitted with horizon {spec.horizon}"
            )
    # one calendar cut for every file
    all_ts = np.sort(np.concatenate([np.asarray(b.ts, dtype=np.int64) for _, b, _ in loaded]))
    t1 = int(all_ts[int(len(all_ts) * (1 - spec.val_frac - spec.test_frac))])
    t2 = int(all_ts[int(len(all_ts) * (1 - spec.test_frac))])
    if ens is not None:
        last = int(ens.manifest["training_window"]["last_label_end_ts"])
        if last >= t1:
            raise DatasetError(
                f"{bundle}: the bundle's training labels reach {np.datetime64(last, 'ns')}, past the "
                f"validation cut {np.datetime64(t1, 'ns')}: its probabilities would leak the future "
                f"into training. Fix: fit the bundle on bars before the cut"
            )
    imported = read_jsonl(jsonl, skip_bad=skip_bad, cut_ns=t1) if jsonl else None
    tok = _load_tokenizer(tokenizer) if tokenizer is not None else None
    budget = prompt_budget_of(spec)
    # -- the scenarios -----------------------------------------------------------------------------------------
    rows_by_split: dict[str, list[_Row]] = {s: [] for s in SPLITS}
    sources = []
    h, g = spec.horizon, spec.gap
    for k, (p, bars, sha) in enumerate(loaded):
        ts = np.asarray(bars.ts, dtype=np.int64)
        a, b = int(np.searchsorted(ts, t1)), int(np.searchsorted(ts, t2))

        def tick(done: int, name: str = p.name, total: int = len(bars)) -> None:
            if progress:
                progress(name, done, total)

        models: list[_L1Model] = []
        if ens is not None:
            embargo = max(g, int(ens.manifest.get("embargo") or 0), ens.label_spec.horizon)
            models = oof_schedule(bars, a, ens, embargo, say) if a > 0 else []
            models.append(
                _L1Model(a, ens, {"model": "bundle", "bundle_hash": ens.bundle_hash[:16], "fit_last_ts": last})
            )
        rows = _rows_for(bars, k, spec, models, ens is not None, tick)
        counts = {}
        for split, lo, hi in (("train", 0, a), ("val", a + g, b), ("test", b + g, len(bars))):
            keep = [r for r in rows if lo <= r.i and r.i + h < hi]
            rows_by_split[split] += keep
            counts[split] = {
                "examples": len(keep),
                "first": str(np.datetime64(keep[0].ts, "ns"))[:19] if keep else None,
                "last": str(np.datetime64(keep[-1].ts, "ns"))[:19] if keep else None,
            }
        sources.append(
            {
                "file": str(p),
                "sha256": sha,
                "symbol": bars.symbol,
                "timeframe": bars.timeframe,
                "bars": len(bars),
                "first": str(bars.times[0])[:19],
                "last": str(bars.times[-1])[:19],
                "splits": counts,
                "layer1_oof": [m.info for m in models if m.ens is not ens],
            }
        )
    if not rows_by_split["train"]:
        raise DatasetError(
            "no training example: the files are too short for the split. Fix: more bars or smaller val/test fractions"
        )
    cert = _certainty_table(rows_by_split["train"])
    # -- write into a temporary directory, then swap it into place ---------------------------------------------
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        table = _write_splits(tmp, rows_by_split, loaded, tpl, cert, tok, budget)
        from fxgate.training.formulas import sft_samples

        formula_samples = sft_samples()
        with (tmp / "train" / "formulas.jsonl").open("w") as fh:
            for s in formula_samples:
                fh.write(json.dumps(s) + "\n")
        table["train"]["formulas"] = len(formula_samples)
        imp_table = None
        if imported is not None:
            imp_table = write_imported(imported, tmp / "train")
            for kind, n in imp_table["written"].items():
                table["train"][f"imported_{kind}"] = n
        warnings_ = list(imported.warnings) if imported is not None else []
        for w in warnings_[:20]:
            _warn(w)
        manifest = {
            "kind": DATA_MANIFEST_KIND,
            "fxgate_version": __version__,
            "feature_engine_version": FEATURE_ENGINE_VERSION,
            "template": {"id": tpl.id, "sha256": tpl.sha256},
            "horizon": spec.horizon,
            "embargo_bars": spec.gap,
            "spread_default": spec.spread,
            "cuts": {
                "val_from": str(np.datetime64(t1, "ns"))[:19],
                "test_from": str(np.datetime64(t2, "ns"))[:19],
                "val_from_ns": t1,
                "test_from_ns": t2,
            },
            "prompt_budget": {
                "n_ctx": spec.n_ctx,
                "think_budget": spec.think_budget,
                "answer_budget": spec.answer_budget,
                "prompt_tokens_max": budget,
                "applied_with": None if tok is None else {"tokenizer": str(tokenizer), "sha256": tok[4]},
            },
            "bundle": None
            if ens is None
            else {
                "path": str(bundle),
                "sha256": ens.bundle_hash,
                "training_split": "out-of-fold refits (sources[].layer1_oof)",
            },
            "certainty_targets": cert,
            "sources": sources,
            "counts": table,
            "imported": imp_table,
            "warnings": warnings_,
        }
        manifest["files"] = {
            str(q.relative_to(tmp)): {"bytes": q.stat().st_size, "sha256": file_sha256(q)}
            for q in sorted(tmp.rglob("*"))
            if q.is_file()
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, allow_nan=False))
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


class DatasetWarning(UserWarning):
    """A dataset input that is accepted but deserves a look (e.g. a record longer than a training sequence)."""


def _warn(msg: str) -> None:
    import warnings

    warnings.warn(msg, DatasetWarning, stacklevel=3)


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Replace ``out`` by ``tmp``: two renames in one directory, the old build deleted only after."""
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
        try:
            tmp.rename(out)
        except BaseException:
            old.rename(out)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(out)


def prompt_budget_of(spec: SplitSpec) -> int:
    """The prompt token budget of the serving configuration ``spec`` names (the live judge's formula)."""
    from fxgate.models.prompt import prompt_budget

    return prompt_budget(spec.n_ctx, spec.think_budget, spec.answer_budget)


def _write_splits(
    d: Path,
    rows_by_split: dict[str, list[_Row]],
    loaded: list,
    tpl: Any,
    cert: dict[str, float],
    tok: tuple | None,
    budget: int,
) -> dict[str, dict[str, int]]:
    table: dict[str, dict[str, int]] = {}
    for split, rows in rows_by_split.items():
        sd = d / split
        sd.mkdir()
        files = {kind: (sd / f"{kind}.jsonl").open("w") for kind in KINDS}
        try:
            for r in rows:
                meta = {
                    "source": r.src,
                    "symbol": loaded[r.src][1].symbol,
                    "ts": r.ts,
                    "label_end_ts": r.label_end_ts,
                    "proposal": r.proposal,
                    "target": r.target,
                    "move": r.move,
                    "spread": r.spread,
                    "probs": r.probs,
                    "layer1": r.l1,
                }
                files["features"].write(json.dumps(_feature_example(r, meta)) + "\n")
                if tok is None:
                    prompt = _prompt_messages(tpl, r.values)
                else:
                    rp = served_prompt(
                        tpl,
                        r.values,
                        chat_template=tok[0],
                        bos_token=tok[1],
                        eos_token=tok[2],
                        count_tokens=tok[3],
                        budget=budget,
                    )
                    prompt = list(rp.messages)
                    meta["dropped_sections"] = list(rp.dropped)
                chosen = _completion(r, cert)
                files["scenarios"].write(
                    json.dumps({"prompt": prompt, "completion": chosen, "values": r.values, "meta": meta}) + "\n"
                )
                files["dpo"].write(
                    json.dumps(
                        {"prompt": prompt, "chosen": chosen, "rejected": _rejected(r), "values": r.values, "meta": meta}
                    )
                    + "\n"
                )
        finally:
            for f in files.values():
                f.close()
        table[split] = {kind: len(rows) for kind in KINDS}
    return table


def served_prompt(
    tpl: Any,
    values: dict[str, str],
    *,
    chat_template: str,
    bos_token: str,
    eos_token: str,
    count_tokens: Callable[[str], int],
    budget: int,
) -> Any:
    """The judge's prompt for ``values`` exactly as the live judge builds it
    (:func:`fxgate.models.prompt.build_prompt` under the same budget): what SFT, DPO and the evaluation train and
    score on."""
    from fxgate.models.prompt import build_prompt

    return build_prompt(
        tpl,
        values,
        chat_template=chat_template,
        bos_token=bos_token,
        eos_token=eos_token,
        count_tokens=count_tokens,
        budget=budget,
    )


def data_budget(data: str | Path) -> dict[str, int]:
    """The serving budget a data directory was built for (its manifest's ``prompt_budget``; the defaults for a
    directory built before it was recorded)."""
    m = _read_json(Path(data) / "manifest.json")
    d = SplitSpec()
    b = (m or {}).get("prompt_budget") or {}
    return {
        "n_ctx": int(b.get("n_ctx", d.n_ctx)),
        "think_budget": int(b.get("think_budget", d.think_budget)),
        "answer_budget": int(b.get("answer_budget", d.answer_budget)),
    }


def _prompt_messages(tpl: Any, values: dict[str, str]) -> list[dict[str, str]]:
    """The judge's system and user messages with every section (the budget is applied when a model renders it)."""
    from fxgate.models.prompt import _fill

    text = "\n\n".join(_fill(s, values, tpl.source) for s in tpl.sections)
    return [{"role": "system", "content": tpl.system}, {"role": "user", "content": text}]


def _completion(r: _Row, cert: dict[str, float]) -> str:
    c = cert["same"] if r.target == r.proposal else (cert["none"] if r.target == "NONE" else cert["opposite"])
    return (
        f"{think_text(r.features, r.modules, r.proposal)}\n</think>\n\n"
        f"{answer_text(r.target, c, _reasons(r.features, r.modules))}"
    )


def _rejected(r: _Row) -> str:
    wrong = r.proposal if r.target == "NONE" else ("SELL" if r.target == "BUY" else "BUY")
    return (
        f"{think_text(r.features, r.modules, r.proposal)}\n</think>\n\n"
        f"{answer_text(wrong, 0.99, _reasons(r.features, r.modules))}"
    )


def _feature_example(r: _Row, meta: dict[str, Any]) -> dict[str, Any]:
    lines = [f"- {k} = {_fmt(v)}: {MEANINGS[k]}" for k, v in r.features.items() if k in MEANINGS]
    q = f"{r.values['bar']}\nWhat do this bar's key features say?"
    return {
        "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": "\n".join(lines)}],
        "meta": meta,
    }
