"""Certified precision: choose the gate's thresholds so that P(precision >= target) >= 1 - delta (``fxgate
calibrate``), and check, window by window in a walk-forward replay, whether the guarantee held on the next bars.

**What is certified.** A *signal* is a bar on which every enabled layer passes; it is *correct* when its P&L after
the full entry spread is positive (the replay's trade convention, engine/metrics.py). The thresholds named in
``[certify] path`` (``l1``: each booster's calibrated confidence; ``l2``: the judge's certainty; a module with a
certifiable threshold, e.g. ``certainty_score``) move together along a path of ``steps`` values from
``strictest`` down to ``loosest``. Learn-then-Test (Angelopoulos, Bates, Candès, Jordan & Lei 2021) with
Hoeffding–Bentkus p-values and fixed-sequence testing (:func:`fxgate.engine.core.certify.certify_path`) picks
the loosest point whose precision >= target it can certify: for exchangeable calibration data, P(precision of the
chosen thresholds >= target) >= 1 - delta. No independence across layers is assumed anywhere: the test is on the
gate's own joint signals, all layers at once.

**The calibration data.** The most recent ``[certify] calibration_bars`` bars before the live window, scored by the
Layer-1 models that will trade the live window, which never saw them (a bundle whose training labels reach into
the block is refused; without one, the models are fitted on the bars before the block). The whole gate runs over
the history once with every path threshold at its loosest value (cheapest mode: the LLM layers are asked only about
bars every fast layer passes there, as they would be live): a bar passing there is a signal at a stricter point
exactly when its path scores are >= that point's value, since module state never depends on thresholds.

**What it is not.** FX bars are not exchangeable; the guarantee holds for data like the calibration block, and the
live precision monitor (``precision_monitor``, added to a certified config) halts signals when the live record
rejects it. With ``horizon`` > 1, overlapping signals are thinned to non-overlapping ones before testing (their
outcomes share bars). Path points with fewer signals than ``[certify] min_signals`` (100), or than a perfect record
would need (:func:`min_signals`), are left out of the sequence before testing: they cannot be rejected, or their
noise would end the sequence at once; which points are left out depends on the scores only, never on the outcomes,
so the test stays a fixed-sequence test given the scores. Not certified: anything the LLM layers do differently live
than in calibration (the judge's P(up) feeds one module, the model confidence set; at the loosest thresholds it
answers on more bars).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from fxgate.engine.audit import iso as _iso
from fxgate.engine.config import GateConfig, check_modules
from fxgate.engine.core.bars import Bars
from fxgate.engine.core.certify import Certificate, certify_path, effective_selection, min_signals
from fxgate.engine.core.errors import FxgateError
from fxgate.engine.gate import Gate
from fxgate.models._stats import wilson
from fxgate.models.ensemble import EnsembleConfig, TreeEnsemble
from fxgate.models.labels import LabelSpec
from fxgate.modules import REGISTRY

__all__ = ["METHOD", "Calibration", "Records", "WindowCheck", "calibrate", "certify_walk_forward", "path_values"]

METHOD = "Learn-then-Test, Hoeffding-Bentkus p-values, fixed-sequence testing (Angelopoulos et al. 2021)"
MONITOR = "precision_monitor"


def path_values(cfg: GateConfig) -> np.ndarray:
    """The path's threshold values, strictest first."""
    c = cfg.certify
    return np.linspace(c.strictest, c.loosest, c.steps) if c.steps > 1 else np.array([c.strictest])


def with_thresholds(cfg: GateConfig, value: float) -> GateConfig:
    """``cfg`` with every threshold on ``[certify] path`` set to ``value``."""
    params = {m: dict(p) for m, p in cfg.l4.params.items()}
    l1, l2 = cfg.l1, cfg.l2
    for name in cfg.certify.path:
        if name == "l1":
            l1 = replace(l1, threshold=float(value))
        elif name == "l2":
            l2 = replace(l2, threshold=float(value))
        else:
            params.setdefault(name, {})[REGISTRY[name].certify_param] = float(value)
    return replace(cfg, l1=l1, l2=l2, l4=replace(cfg.l4, params=params))


def _uncertified(cfg: GateConfig) -> GateConfig:
    """The config without any certificate or monitor (what calibration runs)."""
    l4 = cfg.l4
    mods = tuple(m for m in l4.modules if m != MONITOR)
    params = {m: p for m, p in l4.params.items() if m != MONITOR}
    cf = replace(cfg.certify, target=0.0, n_outcomes=0, n_signals=0, n_correct=0, window_start="", window_end="")
    return replace(cfg, l4=replace(l4, modules=mods, params=params), certify=replace(cf, method=""))


@dataclass
class Records:
    """One gate run at the path's loosest point, for bars ``index`` (positions in the bars): whether each passed
    every layer there (and in which direction), its score on each path threshold, whether it has an outcome within
    the data, and whether its trade was correct; the same for Layer 1's candidate direction (the base rate)."""

    index: np.ndarray
    ts: np.ndarray
    direction: np.ndarray  # +1 / -1 where every layer passed at the loosest point, else 0
    scores: np.ndarray  # (len(path), n): each path threshold's score (NaN where not evaluated)
    has_outcome: np.ndarray
    correct: np.ndarray  # the signal's P&L after the spread > 0 (False without a signal or an outcome)
    candidate: np.ndarray  # Layer 1's lean (+1 / -1; 0 in sample, without a model, or when the boosters disagree)
    candidate_correct: np.ndarray  # the lean's P&L after the spread > 0
    veto: np.ndarray  # each bar's first veto at the loosest point ("" for a signal), object array

    def part(self, lo: int, hi: int) -> Records:
        """The records of bar positions ``lo <= index < hi``."""
        k = (self.index >= lo) & (self.index < hi)
        return Records(*(getattr(self, f)[..., k] for f in self.__dataclass_fields__))

    def selection(self, values: np.ndarray, horizon: int) -> np.ndarray:
        """(len(values), n) bool: the signals at each threshold value (with an outcome; non-overlapping when
        ``horizon`` > 1)."""
        ok = (self.direction != 0) & self.has_outcome
        with np.errstate(invalid="ignore"):
            sel = ok[None, :] & np.all(self.scores[None, :, :] >= values[:, None, None], axis=1)
        return effective_selection(sel, self.index, horizon) if horizon > 1 else sel

    def base_rate(self) -> tuple[int, int]:
        """(correct, n) over Layer 1's leaning bars with an outcome: what trading every candidate gives."""
        k = (self.candidate != 0) & self.has_outcome
        return int(np.count_nonzero(self.candidate_correct & k)), int(np.count_nonzero(k))


def run_records(bars: Bars, cfg: GateConfig, ensemble: Any, lo: int, hi: int) -> Records:
    """Run the gate (``cfg`` at the loosest path point, no certificate) over ``bars[:hi]`` and record bars
    ``lo..hi-1``; the bars before ``lo`` only warm the state."""
    c = with_thresholds(_uncertified(cfg), cfg.certify.loosest)
    c = check_modules(replace(c, mode="cheapest"), "calibration config")
    gate = Gate(c, ensemble, timeframe=bars.timeframe, symbol=bars.symbol)
    try:
        gate.warm_up()
        h, n = cfg.horizon, len(bars)
        path = cfg.certify.path
        m = hi - lo
        direction = np.zeros(m, np.int8)
        cand = np.zeros(m, np.int8)
        scores = np.full((len(path), m), np.nan)
        veto = np.full(m, "", dtype=object)
        for i in range(hi):
            rec = gate.evaluate(bars[i])
            if i < lo:
                continue
            j, d = i - lo, rec.decision
            cand[j] = rec.direction
            if d.action == "NONE":
                veto[j] = d.first_veto or ""
                continue
            direction[j] = 1 if d.action == "BUY" else -1
            for k, name in enumerate(path):
                if name in ("l1", "l2"):
                    s = d.layer(name.upper()).score
                else:
                    s = next((r.score for r in rec.modules if r.name == name), None)
                scores[k, j] = math.nan if s is None else float(s)
    finally:
        gate.close()
    idx = np.arange(lo, hi)
    has = idx + h < n
    close = np.asarray(bars.close, dtype=float)
    move = np.where(has, close[np.minimum(idx + h, n - 1)] - close[idx], 0.0)
    spread = np.asarray(bars.spread, dtype=float)[idx] if bars.spread is not None else np.full(m, cfg.spread)
    correct = has & (direction != 0) & (direction * move - spread > 0)
    cand_ok = has & (cand != 0) & (cand * move - spread > 0)
    return Records(idx, np.asarray(bars.ts)[idx], direction, scores, has, correct, cand, cand_ok, veto)


@dataclass
class Calibration:
    """What calibration found: the certificate, the thresholds it certifies (None: refused), the precision-coverage
    curve along the path, the block, and the certified config (None when refused)."""

    certificate: Certificate
    value: float | None  # the certified threshold value (every path threshold), None when refused
    thresholds: dict[str, float] | None
    curve: list[dict[str, Any]]  # per path point: value, signals, correct, precision, Wilson CI, coverage, p, tested
    block: tuple[int, int]  # bar positions [lo, hi)
    window: tuple[int, int]  # the block's first and last bar time, ns
    base_rate: tuple[int, int]  # (correct, n) of every candidate in the block
    skipped: int  # strictest path points left out (fewer signals than a perfect record needs)
    config: GateConfig | None = None
    ensemble: Any = None

    def to_dict(self) -> dict[str, Any]:
        k, n = self.base_rate
        return {
            "certificate": self.certificate.to_dict(),
            "value": self.value,
            "thresholds": self.thresholds,
            "curve": self.curve,
            "block": list(self.block),
            "window": [_iso(self.window[0]), _iso(self.window[1])],
            "base_rate": {
                "correct": k,
                "n": n,
                "rate": k / n if n else None,
                "ci95": list(wilson(k, n)) if n else None,
            },
            "skipped_points": self.skipped,
        }


def certify_records(rec: Records, cfg: GateConfig, target: float, delta: float) -> tuple[Certificate, list, int]:
    """The certificate on ``rec`` (see the module docstring), the precision-coverage curve, and how many strictest
    points were left out."""
    values = path_values(cfg)
    sel = rec.selection(values, cfg.horizon)
    n_k = sel.sum(axis=1)
    c_k = (sel & rec.correct[None, :]).sum(axis=1)
    need = min_signals(target, delta)
    keep = np.flatnonzero(n_k >= max(need, cfg.certify.min_signals))
    if keep.size:
        first = int(keep[0])
        cert = certify_path(sel[first:], rec.correct, target, delta)
        if cert.index is not None:
            cert = replace(cert, index=cert.index + first)
        elif first:  # the sequence started below the strictest point: say which point failed
            where = (
                f"at the first tested point (every path threshold at {values[first]:g}; the {first} stricter "
                f"point(s) have fewer than {max(need, cfg.certify.min_signals)} signals)"
            )
            cert = replace(cert, reason=cert.reason.replace("at the strictest point", where))
    else:
        first = len(values)
        cert = certify_path(sel, rec.correct, target, delta)  # refuses: says how few signals there are
        loosest = int(n_k[-1])
        k = (rec.candidate != 0) & rec.has_outcome & (rec.direction == 0)
        names, counts = np.unique(rec.veto[k].astype(str), return_counts=True)
        top = sorted(zip(counts, names, strict=True), reverse=True)[:3]
        why = (
            "; at the loosest point the first vetoes of the candidate bars were "
            + ", ".join(f"{v} {c}" for c, v in top)
            if top
            else ""
        )
        cert = replace(
            cert,
            n_signals=loosest,
            n_correct=int(c_k[-1]),
            precision=float(c_k[-1] / loosest) if loosest else 0.0,
            reason=f"too few signals: {loosest} even at the loosest point (every path threshold at "
            f"{values[-1]:g}); testing needs >= {max(need, cfg.certify.min_signals)} ([certify] min_signals = "
            f"{cfg.certify.min_signals}; a perfect record needs {need} for target {target:g} at delta {delta:g})" + why,
        )
    base = int(np.count_nonzero((rec.candidate != 0) & rec.has_outcome))
    curve = []
    for k, v in enumerate(values):
        lo, hi = wilson(int(c_k[k]), int(n_k[k])) if n_k[k] else (None, None)
        t = k - first
        curve.append(
            {
                "value": float(v),
                "signals": int(n_k[k]),
                "correct": int(c_k[k]),
                "precision": float(c_k[k] / n_k[k]) if n_k[k] else None,
                "ci95": [lo, hi],
                "coverage": float(n_k[k] / base) if base else None,
                "p_value": cert.p_values[t] if 0 <= t < len(cert.p_values) else None,
                "certified": cert.index is not None and first <= k <= cert.index,
            }
        )
    return cert, curve, first


def calibrate(
    bars: Bars,
    cfg: GateConfig,
    *,
    ensemble: Any = None,
    target: float | None = None,
    delta: float | None = None,
    calibration_bars: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> Calibration:
    """Certify ``cfg``'s path thresholds on the last ``calibration_bars`` bars of ``bars`` (defaults: ``[certify]``).
    ``ensemble``: the Layer-1 models that will trade after these bars, fitted before the block (refused otherwise);
    None: fitted here on the bars before the block (``[replay]`` settings), returned in ``Calibration.ensemble``."""
    cf = cfg.certify
    cf = replace(
        cf,
        target=cf.target if target is None else float(target),
        delta=cf.delta if delta is None else float(delta),
        calibration_bars=cf.calibration_bars if calibration_bars is None else int(calibration_bars),
    )
    cfg = check_modules(replace(cfg, certify=cf), "calibration config")  # the values checked as a config's
    if not 0 < cf.target < 1:
        raise FxgateError(f"target precision {cf.target}: must be in (0, 1), e.g. --target-precision 0.6")
    n, C = len(bars), cf.calibration_bars
    lo = n - C
    if lo < 100:
        raise FxgateError(
            f"{n} bars: a {C}-bar calibration block leaves {max(lo, 0)} bars before it for the models and the "
            "modules' history. Fix: give a longer file or lower --calibration-bars ([certify] calibration_bars)"
        )
    say = progress or (lambda _m: None)
    if ensemble is None:
        say(f"fitting Layer 1 on bars 0..{lo - 1} (before the calibration block)")
        ensemble = fit_before(bars, cfg, lo)
    else:
        end = int(ensemble.manifest["training_window"]["last_label_end_ts"])
        if end >= int(bars.ts[lo]):
            raise FxgateError(
                f"the bundle's training labels reach {_iso(end)}, inside the calibration block (from "
                f"{_iso(int(bars.ts[lo]))}): its scores there are in sample, and certifying on them would lie. "
                "Fix: calibrate without --bundle (fxgate fits the models on the bars before the block and writes "
                "them), or fit the bundle on bars before the block"
            )
    say(f"running the gate over bars 0..{n - 1} at the loosest path point ({cf.loosest:g})")
    rec = run_records(bars, cfg, ensemble, lo, n)
    cert, curve, skipped = certify_records(rec, cfg, cf.target, cf.delta)
    window = (int(bars.ts[lo]), int(bars.ts[n - 1]))
    cert = replace(cert, n_outcomes=rec.base_rate()[1])  # calibration bars with a candidate and an outcome
    if cert.index is None:
        return Calibration(cert, None, None, curve, (lo, n), window, rec.base_rate(), skipped, None, ensemble)
    value = float(path_values(cfg)[cert.index])
    out = with_thresholds(cfg, value)
    mods = out.l4.modules if MONITOR in out.l4.modules else (MONITOR, *out.l4.modules)  # first: a halt says so
    out = replace(
        out,
        l4=replace(out.l4, modules=mods, enabled=True),
        certify=replace(
            out.certify,
            value=value,
            bundle_hash=ensemble.bundle_hash[:16],
            symbol=bars.symbol or "",
            timeframe=bars.timeframe or "",
            n_outcomes=cert.n_outcomes,
            n_signals=cert.n_signals,
            n_correct=cert.n_correct,
            window_start=_iso(window[0]),
            window_end=_iso(window[1]),
            method=METHOD,
        ),
    )
    out = check_modules(out, "certified config")
    thresholds = {p: value for p in cf.path}
    return Calibration(cert, value, thresholds, curve, (lo, n), window, rec.base_rate(), skipped, out, ensemble)


def fit_before(bars: Bars, cfg: GateConfig, end: int) -> TreeEnsemble:
    """The Layer-1 ensemble fitted on ``bars[:end]`` with the ``[replay]`` settings (as a walk-forward refit)."""
    rc = cfg.replay
    ens = TreeEnsemble()
    ens.fit(
        bars[:end],
        LabelSpec("next", cfg.horizon, default_spread=cfg.spread),
        EnsembleConfig(n_estimators=rc.n_estimators, folds=rc.folds, threshold=cfg.l1.threshold),
        evaluate=False,
    )
    return ens


# -- walk-forward: was the guarantee kept on the next window? -------------------------------------------------------
@dataclass
class WindowCheck:
    """One walk-forward window: thresholds certified on the block before it, then what they did on it."""

    start: int  # bar positions of the window [start, end)
    end: int
    block: tuple[int, int]
    certificate: Certificate
    value: float | None
    curve: list[dict[str, Any]]
    signals: int = 0  # in the window, at the certified value (non-overlapping when horizon > 1)
    correct: int = 0
    base_rate: tuple[int, int] = (0, 0)
    held: bool | None = None  # realized precision >= target; None: not certified, or no signal in the window
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self, bars: Bars) -> dict[str, Any]:
        k, n = self.base_rate
        lo, hi = wilson(self.correct, self.signals) if self.signals else (None, None)
        return {
            "window": [_iso(int(bars.ts[self.start])), _iso(int(bars.ts[self.end - 1]))],
            "block": [_iso(int(bars.ts[self.block[0]])), _iso(int(bars.ts[self.block[1] - 1]))],
            "certified": self.certificate.certified,
            "reason": self.certificate.reason,
            "threshold": self.value,
            "calibration_signals": self.certificate.n_signals,
            "signals": self.signals,
            "correct": self.correct,
            "precision": self.correct / self.signals if self.signals else None,
            "ci95": [lo, hi],
            "base_rate": k / n if n else None,
            "base_n": n,
            "held": self.held,
            "curve": self.curve,
        }


def certify_walk_forward(
    bars: Bars,
    cfg: GateConfig,
    *,
    target: float,
    delta: float,
    progress: Callable[[str], None] | None = None,
    models: dict[int, Any] | None = None,
) -> list[WindowCheck]:
    """For each walk-forward window of ``[replay]`` (``train_bars``, ``window_bars``): fit Layer 1 on the bars
    before the ``[certify] calibration_bars`` block that precedes the window (``models[end]``, a fit on
    ``bars[:end]``, is reused when given), certify on the block, apply the certified thresholds to the window, and
    record whether its realized precision reached the target."""
    say = progress or (lambda _m: None)
    rc, C, n = cfg.replay, cfg.certify.calibration_bars, len(bars)
    edges = [*range(rc.train_bars, n, rc.window_bars), n]
    fits: dict[int, Any] = dict(models or {})
    out = []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        lo = a - C
        if lo < 100:
            continue
        if lo not in fits:
            say(f"fitting Layer 1 on bars 0..{lo - 1} for the calibration block {lo}..{a - 1}")
            fits[lo] = fit_before(bars, cfg, lo)
        say(f"certifying on bars {lo}..{a - 1}, then checking bars {a}..{b - 1}")
        rec = run_records(bars, cfg, fits[lo], lo, b)
        block, win = rec.part(lo, a), rec.part(a, b)
        # a block bar whose outcome needs a bar of the window is not a calibration outcome: the window is what is
        # being judged, so nothing of it may inform the thresholds
        inside = block.index + cfg.horizon < a
        block.has_outcome = block.has_outcome & inside
        block.correct = block.correct & inside
        block.candidate_correct = block.candidate_correct & inside
        cert, curve, _ = certify_records(block, cfg, target, delta)
        chk = WindowCheck(a, b, (lo, a), cert, None, curve, base_rate=win.base_rate())
        used = block.index[block.has_outcome]
        chk.extra["last_exit_bar"] = int(used.max()) + cfg.horizon if used.size else None  # must stay < a
        if cert.index is not None:
            v = float(path_values(cfg)[cert.index])
            sel = win.selection(np.array([v]), cfg.horizon)[0]
            chk.value, chk.signals = v, int(sel.sum())
            chk.correct = int((sel & win.correct).sum())
            chk.held = None if chk.signals == 0 else chk.correct / chk.signals >= target
        out.append(chk)
    return out


def summary(checks: list[WindowCheck], target: float, delta: float) -> dict[str, Any]:
    """The walk-forward verdict: in how many windows with certified signals the realized precision reached the
    target, against the 1 - delta the guarantee promises."""
    judged = [c for c in checks if c.held is not None]
    held = sum(bool(c.held) for c in judged)
    sig = sum(c.signals for c in checks)
    cor = sum(c.correct for c in checks)
    lo, hi = wilson(cor, sig) if sig else (None, None)
    if not judged:
        plain = "no window had certified signals to judge: " + (
            "no threshold could be certified"
            if not any(c.certificate.certified for c in checks)
            else "the certified thresholds emitted nothing"
        )
    else:
        frac = held / len(judged)
        plain = (
            f"the guarantee held in {held} of {len(judged)} windows ({frac:.0%}); it promises >= {1 - delta:.0%} "
            + ("on average: consistent" if frac >= 1 - delta else "on average: NOT met here")
            + (" (too few windows to tell either way)" if len(judged) < 10 else "")
        )
    return {
        "target": target,
        "delta": delta,
        "windows": len(checks),
        "certified_windows": sum(c.certificate.certified for c in checks),
        "judged_windows": len(judged),
        "held_windows": held,
        "signals": sig,
        "correct": cor,
        "precision": cor / sig if sig else None,
        "ci95": [lo, hi],
        "verdict": plain,
    }
