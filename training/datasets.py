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

The proposal a scenario asks about is Layer 1's candidate direction when a fitted bundle is given (refused if it
was trained on bars at or after T1); without one it is the direction of the last bar's move, a naive proposal
that keeps the prompt format identical to serving.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fxgate.engine._hash import file_sha256
from fxgate.engine.errors import FxgateError

__all__ = ["build", "SplitSpec", "DatasetError", "think_text", "answer_text", "SPLITS", "KINDS"]

SPLITS = ("train", "val", "test")
KINDS = ("features", "scenarios", "dpo")
#: modules whose verdicts the scenarios show (SHAP is left out: 20 ms per bar, and it explains Layer 1 only)
DATASET_MODULES = ("vpin", "bocpd", "regime", "uncertainty", "execution_cost", "adverse_selection", "robust_kelly",
                   "bayesian_sizing")  # fmt: skip
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
    "SESS_ASIA": "1 in the Asian session", "SESS_LONDON": "1 in the London session",
    "SESS_NY": "1 in the New York session",
    "SPREAD_REL": "spread over the close",
}  # fmt: skip


class DatasetError(FxgateError, ValueError):
    """Bad input to a dataset builder; the message names the file/line/field and the fix."""


@dataclass(frozen=True, kw_only=True)
class SplitSpec:
    horizon: int = 1
    val_frac: float = 0.15
    test_frac: float = 0.15
    embargo: int = 0  # bars; 0 = the horizon
    spread: float = 0.0  # price units, for bars without a spread column

    def __post_init__(self) -> None:
        if self.horizon < 1:
            raise DatasetError(f"horizon = {self.horizon}: must be >= 1 bar")
        if not (0 < self.val_frac < 1 and 0 < self.test_frac < 1 and self.val_frac + self.test_frac < 0.9):
            raise DatasetError("val_frac and test_frac must be in (0, 1) with val_frac + test_frac < 0.9")
        if self.embargo and self.embargo < self.horizon:
            raise DatasetError(f"embargo = {self.embargo} bars is shorter than the horizon ({self.horizon}): "
                               f"labels would overlap the next split. Fix: embargo >= horizon (or 0 for the "
                               f"horizon)")  # fmt: skip

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


def _rows_for(bars: Any, src: int, spec: SplitSpec, ens: Any, progress: Callable[[int], None] | None) -> list[_Row]:
    from fxgate.engine.config import GateConfig, L1Config, L4Config
    from fxgate.engine.gate import Gate
    from fxgate.models.ensemble import MODEL_NAMES
    from fxgate.models.prompt import KEY_FEATURES, prompt_values

    cfg = GateConfig(horizon=spec.horizon, spread=spec.spread, mode="full",
                     l1=L1Config(enabled=ens is not None), l4=L4Config(modules=DATASET_MODULES))  # fmt: skip
    gate = Gate(cfg, ens, timeframe=bars.timeframe, symbol=bars.symbol)
    gate.warm_up()
    idx = {n: i for i, n in enumerate(gate.features.names)}
    close = np.asarray(bars.close, dtype=float)
    rows: list[_Row] = []
    n, h = len(bars), spec.horizon
    for i in range(n):
        b = bars[i]
        d = gate.on_bar(b)
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
        if ens is not None:
            pd_ = [x_["p_up"] for x_ in d.layer("L1").details]
            if len(pd_) != 3 or not all(math.isfinite(p) for p in pd_):
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
        vals = prompt_values(symbol=bars.symbol, timeframe=bars.timeframe, ts_ns=int(b.ts),
                             bar={"open": b.open, "high": b.high, "low": b.low, "close": b.close, "volume": b.volume,
                                  "spread": spread},
                             direction=proposal, horizon=h, probs=probs, features=feats, modules=mods)  # fmt: skip
        rows.append(_Row(src, i, int(b.ts), int(bars.ts[i + h]), vals, feats, mods, proposal, target, move, spread,
                         probs))  # fmt: skip
    gate.close()
    return rows


def _certainty_table(train: list[_Row]) -> dict[str, float]:
    """P(answer is right | proposal) on the training split, for the three possible answers."""
    n = max(1, len(train))
    same = sum(r.target == r.proposal for r in train) / n
    none = sum(r.target == "NONE" for r in train) / n
    return {"same": same, "none": none, "opposite": max(0.0, 1 - same - none)}


def build(bar_files: Sequence[str | Path], out: str | Path, spec: SplitSpec, *, bundle: str | Path | None = None,
          jsonl: Sequence[str | Path] = (), skip_bad: bool = False, load_kwargs: dict[str, Any] | None = None,
          progress: Callable[[str, int, int], None] | None = None) -> dict[str, Any]:  # fmt: skip
    """Write the three splits and ``manifest.json`` into ``out``; return the manifest. ``progress(file, bars done,
    bars in the file)`` is called as bars are processed."""
    from fxgate.engine._version import __version__
    from fxgate.engine.loader import load_bars
    from fxgate.models.features import FEATURE_ENGINE_VERSION
    from fxgate.models.prompt import load_template

    if not bar_files:
        raise DatasetError("no bar files given. Fix: --bars FILE (repeat for several pairs)")
    out = Path(out)
    tpl = load_template("judge.v1")
    loaded = []
    for f in bar_files:
        p = Path(f)
        bars = load_bars(p, **(load_kwargs or {}))
        if len(bars) < 500:
            raise DatasetError(f"{p}: {len(bars)} bars; a time split with an embargo needs at least 500")
        loaded.append((p, bars))
    ens = None
    if bundle is not None:
        from fxgate.models.ensemble import TreeEnsemble

        ens = TreeEnsemble.load(bundle)
    # one calendar cut for every file
    all_ts = np.sort(np.concatenate([np.asarray(b.ts, dtype=np.int64) for _, b in loaded]))
    t1 = int(all_ts[int(len(all_ts) * (1 - spec.val_frac - spec.test_frac))])
    t2 = int(all_ts[int(len(all_ts) * (1 - spec.test_frac))])
    if ens is not None:
        last = int(ens.manifest["training_window"]["last_label_end_ts"])
        if last >= t1:
            raise DatasetError(f"{bundle}: the bundle's training labels reach {np.datetime64(last, 'ns')}, past the "
                               f"validation cut {np.datetime64(t1, 'ns')}: its probabilities would leak the future "
                               f"into training. Fix: fit the bundle on bars before the cut")  # fmt: skip
    rows_by_split: dict[str, list[_Row]] = {s: [] for s in SPLITS}
    sources = []
    for k, (p, bars) in enumerate(loaded):
        ts = np.asarray(bars.ts, dtype=np.int64)
        a, b = int(np.searchsorted(ts, t1)), int(np.searchsorted(ts, t2))

        def tick(done: int, name: str = p.name, total: int = len(bars)) -> None:
            if progress:
                progress(name, done, total)

        rows = _rows_for(bars, k, spec, ens, tick)
        h, g = spec.horizon, spec.gap
        counts = {}
        for split, lo, hi in (("train", 0, a), ("val", a + g, b), ("test", b + g, len(bars))):
            keep = [r for r in rows if lo <= r.i and r.i + h < hi]
            rows_by_split[split] += keep
            counts[split] = {"examples": len(keep),
                             "first": str(np.datetime64(keep[0].ts, "ns"))[:19] if keep else None,
                             "last": str(np.datetime64(keep[-1].ts, "ns"))[:19] if keep else None}  # fmt: skip
        sources.append({"file": str(p), "sha256": file_sha256(p), "symbol": bars.symbol, "timeframe": bars.timeframe,
                        "bars": len(bars), "first": str(bars.times[0])[:19], "last": str(bars.times[-1])[:19],
                        "splits": counts})  # fmt: skip
    if not rows_by_split["train"]:
        raise DatasetError("no training example: the files are too short for the split. Fix: more bars or smaller "
                           "val/test fractions")  # fmt: skip
    cert = _certainty_table(rows_by_split["train"])
    out.mkdir(parents=True, exist_ok=True)
    table: dict[str, dict[str, int]] = {}
    for split, rows in rows_by_split.items():
        d = out / split
        d.mkdir(exist_ok=True)
        files = {kind: (d / f"{kind}.jsonl").open("w") for kind in KINDS}
        for r in rows:
            meta = {"source": r.src, "symbol": loaded[r.src][1].symbol, "ts": r.ts, "label_end_ts": r.label_end_ts,
                    "proposal": r.proposal, "target": r.target, "move": r.move, "spread": r.spread,
                    "probs": r.probs}  # fmt: skip
            files["features"].write(json.dumps(_feature_example(r, meta)) + "\n")
            prompt = _prompt_messages(tpl, r.values)
            chosen = _completion(r, cert)
            files["scenarios"].write(json.dumps({"prompt": prompt, "completion": chosen, "meta": meta}) + "\n")
            files["dpo"].write(json.dumps({"prompt": prompt, "chosen": chosen, "rejected": _rejected(r),
                                           "meta": meta}) + "\n")  # fmt: skip
        for f in files.values():
            f.close()
        table[split] = {kind: len(rows) for kind in KINDS}
    from fxgate.training.formulas import sft_samples

    formula_samples = sft_samples()
    with (out / "train" / "formulas.jsonl").open("w") as fh:
        for s in formula_samples:
            fh.write(json.dumps(s) + "\n")
    table["train"]["formulas"] = len(formula_samples)
    imported = None
    if jsonl:
        from fxgate.training.imports import import_jsonl

        imported = import_jsonl(jsonl, out / "train", skip_bad=skip_bad)
        for kind, n in imported["written"].items():
            table["train"][f"imported_{kind}"] = n
    manifest = {
        "fxgate_version": __version__, "feature_engine_version": FEATURE_ENGINE_VERSION,
        "template": {"id": tpl.id, "sha256": tpl.sha256}, "horizon": spec.horizon, "embargo_bars": spec.gap,
        "spread_default": spec.spread, "cuts": {"val_from": str(np.datetime64(t1, "ns"))[:19],
                                                "test_from": str(np.datetime64(t2, "ns"))[:19],
                                                "val_from_ns": t1, "test_from_ns": t2},
        "bundle": None if ens is None else {"path": str(bundle), "sha256": ens.bundle_hash},
        "certainty_targets": cert, "sources": sources, "counts": table, "imported": imported,
    }  # fmt: skip
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def _prompt_messages(tpl: Any, values: dict[str, str]) -> list[dict[str, str]]:
    """The judge's system and user messages with every section (the budget is applied when a model renders it)."""
    from fxgate.models.prompt import _fill

    text = "\n\n".join(_fill(s, values, tpl.source) for s in tpl.sections)
    return [{"role": "system", "content": tpl.system}, {"role": "user", "content": text}]


def _completion(r: _Row, cert: dict[str, float]) -> str:
    c = cert["same"] if r.target == r.proposal else (cert["none"] if r.target == "NONE" else cert["opposite"])
    return (f"{think_text(r.features, r.modules, r.proposal)}\n</think>\n\n"
            f"{answer_text(r.target, c, _reasons(r.features, r.modules))}")  # fmt: skip


def _rejected(r: _Row) -> str:
    wrong = r.proposal if r.target == "NONE" else ("SELL" if r.target == "BUY" else "BUY")
    return (f"{think_text(r.features, r.modules, r.proposal)}\n</think>\n\n"
            f"{answer_text(wrong, 0.99, _reasons(r.features, r.modules))}")  # fmt: skip


def _feature_example(r: _Row, meta: dict[str, Any]) -> dict[str, Any]:
    lines = [f"- {k} = {_fmt(v)}: {MEANINGS[k]}" for k, v in r.features.items() if k in MEANINGS]
    q = f"{r.values['bar']}\nWhat do this bar's key features say?"
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": "\n".join(lines)}],
            "meta": meta}  # fmt: skip
