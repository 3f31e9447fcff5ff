"""Certified precision (issue #17), pure statistics: Learn-then-Test with Hoeffding–Bentkus p-values and
fixed-sequence testing for the calibration, non-overlap thinning of dependent signals, and a betting e-process that
watches live precision.

* :func:`hb_p_value` — the Hoeffding–Bentkus p-value p^HB of Angelopoulos, Bates, Candès, Jordan & Lei (2021),
  *Learn then Test: calibrating predictive algorithms to achieve risk control* (arXiv:2110.01052; Ann. Appl. Stat.
  19(2), 2025), §3 (Prop. 3 in the issue's citation):
  ``min(exp(-n h1(min(r̂, α), α)), e · P(Binom(n, α) <= ceil(n r̂)))``, ``h1(a, b) = a log(a/b) + (1-a)
  log((1-a)/(1-b))`` (Hoeffding 1963, JASA 58, Thm. 1; Bentkus 2004, Ann. Probab. 32(2)). It is the same function
  as MAPIE's ``mapie/risk_control/methods.py::compute_hoeffding_bentkus_p_value(..., binary=False)``.
* :func:`certify_path` — LTT (ibid., Thm. 1 and §4) with fixed-sequence testing (Bauer 1991, *Multiple testing in
  clinical trials*, Stat. Med. 10(6)): test the path points in their pre-set order at level delta each, stop at the
  first non-rejection; every rejected point has precision >= target simultaneously with probability >= 1 - delta,
  so the loosest of them (most signals) is certified.
* :func:`thin_non_overlapping` / :func:`effective_selection` — keep signals whose holding periods do not overlap
  (overlapping trades share bars, so their outcomes are dependent and LTT's exchangeability fails).
* :class:`PrecisionMonitor` — an e-process for H0: live precision >= target (Waudby-Smith & Ramdas 2023,
  *Estimating means of bounded random variables by betting*, JRSS-B 86(1): their capital process ``K_t^-(m)``,
  bet by aGRAPA; Shafer 2021, *Testing by betting*, JRSS-A; Ville 1939). Halts when the wealth reaches ``1/alpha``.

Foundation layer: numpy and scipy only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

__all__ = [
    "hb_p_value",
    "min_signals",
    "Certificate",
    "certify_path",
    "thin_non_overlapping",
    "effective_selection",
    "PrecisionMonitor",
]

#: n·r̂ within this of an integer counts as that integer in the Bentkus term: r̂ = k/n computed in floating point can
#: land one ulp above k/n, and ceil would then add a whole error to the count.
_CEIL_TOL = 1e-9


def _check_unit_open(name: str, x: float) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in (0, 1), got {x!r}") from None
    if not 0.0 < v < 1.0:  # also False for NaN
        raise ValueError(f"{name} must be in (0, 1), got {x!r}")
    return v


def _h1(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``h1(a, b) = a log(a/b) + (1-a) log((1-a)/(1-b))`` (the Bernoulli KL divergence, Hoeffding 1963 eq. 2.1),
    with ``0 log 0 = 0``; ``a <= b < 1`` here, so the second term is finite."""
    a = np.asarray(a, dtype=float)
    first = np.where(a > 0, a * np.log(np.where(a > 0, a, 1.0) / b), 0.0)
    second = np.where(a < 1, (1 - a) * np.log(np.where(a < 1, 1 - a, 1.0) / (1 - b)), 0.0)
    return first + second


def _hb_p_values(r_hat: np.ndarray, k: np.ndarray, n: np.ndarray, alpha: float) -> np.ndarray:
    """Vectorized p^HB from the empirical risk ``r_hat`` (Hoeffding term) and the integer error count ``k`` =
    ceil(n r̂) (Bentkus term) over ``n`` outcomes; 1.0 where ``n == 0``."""
    n = np.asarray(n, dtype=np.int64)
    r = np.minimum(np.asarray(r_hat, dtype=float), alpha)
    with np.errstate(invalid="ignore", divide="ignore"):
        hoeffding = np.exp(-n * _h1(r, np.full_like(r, alpha)))
    bentkus = math.e * stats.binom.cdf(k, n, alpha)
    p = np.minimum(np.minimum(hoeffding, bentkus), 1.0)
    return np.where(n > 0, p, 1.0)


def hb_p_value(risk_hat: float, n: int, alpha: float) -> float:
    """Hoeffding–Bentkus p-value for H0: risk > alpha from an empirical risk ``risk_hat`` in [0, 1] over ``n``
    i.i.d. outcomes (LTT, Angelopoulos et al. 2021, §3, p^HB):

        p^HB = min( exp(-n h1(min(r̂, α), α)),  e · P(Binom(n, α) <= ceil(n r̂)) ),

    ``h1(a, b) = a log(a/b) + (1-a) log((1-a)/(1-b))``. Valid (super-uniform) for losses in [0, 1]; ``n = 0`` gives
    1.0. The result is capped at 1 (the Bentkus term alone can exceed it)."""
    a = _check_unit_open("alpha", alpha)
    try:
        r = float(risk_hat)
    except (TypeError, ValueError):
        raise ValueError(f"risk_hat must be a number in [0, 1], got {risk_hat!r}") from None
    if not 0.0 <= r <= 1.0:
        raise ValueError(f"risk_hat must be in [0, 1], got {risk_hat!r}")
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    n = int(n)
    if n == 0:
        return 1.0
    k = math.ceil(n * r - _CEIL_TOL)
    return float(_hb_p_values(np.array([r]), np.array([k]), np.array([n]), a)[0])


def min_signals(target: float, delta: float) -> int:
    """The smallest n for which a perfect record (n correct of n) certifies precision >= ``target`` at level
    ``delta``: with r̂ = 0 the Hoeffding term is ``target**n`` and the Bentkus term ``e·target**n``, so p^HB =
    ``target**n`` and n = ceil(log(delta) / log(target)) (0.9 at 0.05: 29)."""
    t = _check_unit_open("target", target)
    d = _check_unit_open("delta", delta)
    n = max(1, math.ceil(math.log(d) / math.log(t)))
    # the closed form can be one off in floating point: settle it on the p-value itself
    while n > 1 and hb_p_value(0.0, n - 1, 1 - t) <= d:
        n -= 1
    while hb_p_value(0.0, n, 1 - t) > d:
        n += 1
    return n


@dataclass(frozen=True)
class Certificate:
    """The outcome of :func:`certify_path`: whether (and where on the path) precision >= ``target`` is certified at
    level ``delta``, the counts behind it, every p-value tested, and one line a trader can read."""

    certified: bool
    index: int | None  # the chosen point of the path (None: refused)
    target: float
    delta: float
    n_outcomes: int  # calibration outcomes available (all candidates)
    n_signals: int  # at the chosen point (or at the strictest point if refused)
    n_correct: int
    precision: float  # n_correct / n_signals (0.0 when there are no signals)
    p_values: tuple[float, ...]  # one per path point tested, in order (stops after the first non-rejection)
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "certified": self.certified,
            "index": self.index,
            "target": self.target,
            "delta": self.delta,
            "n_outcomes": self.n_outcomes,
            "n_signals": self.n_signals,
            "n_correct": self.n_correct,
            "precision": self.precision,
            "p_values": list(self.p_values),
            "reason": self.reason,
        }


def _fmt_p(p: float) -> str:
    return f"{p:.2g}" if p < 0.01 else f"{p:.2f}"


def certify_path(selected: np.ndarray, correct: np.ndarray, target: float, delta: float) -> Certificate:
    """Certify precision >= ``target`` at level ``delta`` along a path of selection rules (LTT with fixed-sequence
    testing; Angelopoulos et al. 2021, Thm. 1 and §4; Bauer 1991).

    ``selected`` is bool (n_points, n): row k marks the calibration bars that are signals at path point k, rows
    ordered from the STRICTEST (k = 0) to the loosest, fixed before seeing the outcomes. ``correct`` is bool (n,):
    whether each bar's trade would be correct. The risk at point k is conditional on selection, r̂_k = 1 -
    precision_k over n_k = selected[k].sum() signals (MAPIE's precision risk); p_k = :func:`hb_p_value` (r̂_k, n_k,
    1 - target). Points are tested in order at level ``delta`` each and testing stops at the first p_k > delta; the
    rejected prefix is the certified set and its LOOSEST point is chosen. For exchangeable calibration data,
    P(every certified point has precision >= target) >= 1 - delta, hence P(precision(chosen) >= target) >= 1 - delta.
    """
    t = _check_unit_open("target", target)
    d = _check_unit_open("delta", delta)
    sel = np.asarray(selected)
    cor = np.asarray(correct)
    if sel.dtype != np.bool_:
        raise ValueError(f"selected must be a bool array, got dtype {sel.dtype}")
    if cor.dtype != np.bool_:
        raise ValueError(f"correct must be a bool array, got dtype {cor.dtype}")
    if sel.ndim != 2:
        raise ValueError(f"selected must be 2-D (n_points, n), got shape {sel.shape}")
    if cor.ndim != 1:
        raise ValueError(f"correct must be 1-D (n,), got shape {cor.shape}")
    if sel.shape[0] == 0:
        raise ValueError("selected has no path points (0 rows)")
    if sel.shape[1] != cor.shape[0]:
        raise ValueError(f"selected has {sel.shape[1]} columns but correct has {cor.shape[0]} outcomes")

    alpha = 1.0 - t
    n_k = np.count_nonzero(sel, axis=1).astype(np.int64)
    c_k = np.count_nonzero(sel & cor, axis=1).astype(np.int64)
    wrong = n_k - c_k
    with np.errstate(invalid="ignore", divide="ignore"):
        r_hat = np.where(n_k > 0, wrong / np.maximum(n_k, 1), 1.0)
    p_all = _hb_p_values(r_hat, wrong, n_k, alpha)

    tested: list[float] = []
    last = -1
    for k, p in enumerate(p_all):
        tested.append(float(p))
        if p > d:
            break
        last = k

    def prec(k: int) -> float:
        return float(c_k[k] / n_k[k]) if n_k[k] > 0 else 0.0

    n_points = sel.shape[0]
    if last >= 0:
        k = last
        reason = (
            f"precision >= {t:g} certified at delta {d:g}: path point {k} of {n_points} (0 = strictest), "
            f"{int(n_k[k])} signals, {int(c_k[k])} correct, precision {prec(k):.3f}, p = {_fmt_p(tested[k])}"
        )
        return Certificate(True, k, t, d, int(sel.shape[1]), int(n_k[k]), int(c_k[k]), prec(k), tuple(tested), reason)

    need = min_signals(t, d)
    n0, c0, p0 = int(n_k[0]), int(c_k[0]), tested[0]
    if n0 < need:
        reason = (
            f"too few signals: {n0} at the strictest point, a perfect record needs >= {need} "
            f"for target {t:g} at delta {d:g}"
        )
    elif prec(0) < t:
        reason = (
            f"target above what the data supports: precision {prec(0):.2f} at the strictest point "
            f"(n={n0}, {c0} correct, p={_fmt_p(p0)} > delta {d:g}) is below target {t:g}; "
            "fixed-sequence testing tests no looser point"
        )
    else:
        reason = (
            f"not enough evidence: precision {prec(0):.2f} at the strictest point (n={n0}, {c0} correct) is not below "
            f"target {t:g} but p={_fmt_p(p0)} > delta {d:g}; more signals are needed"
        )
    return Certificate(False, None, t, d, int(sel.shape[1]), n0, c0, prec(0), tuple(tested), reason)


def _check_entry(entry: np.ndarray, horizon: int) -> np.ndarray:
    e = np.asarray(entry)
    if e.ndim != 1:
        raise ValueError(f"entry must be 1-D, got shape {e.shape}")
    if e.size and not np.issubdtype(e.dtype, np.integer):
        raise ValueError(f"entry must hold integer bar indices, got dtype {e.dtype}")
    if isinstance(horizon, bool) or not isinstance(horizon, int | np.integer) or horizon < 1:
        raise ValueError(f"horizon must be an integer >= 1, got {horizon!r}")
    e = e.astype(np.int64, copy=False)
    if e.size > 1 and np.any(np.diff(e) < 0):
        raise ValueError("entry bar indices must be sorted (non-decreasing)")
    return e


def thin_non_overlapping(entry: np.ndarray, horizon: int) -> np.ndarray:
    """Bool mask over the sorted entry bar indices ``entry``: greedily in time order, keep an entry only if it is
    >= ``horizon`` bars after the last kept one (the first is always kept; a repeated index is never kept twice).
    Trades held ``horizon`` bars that overlap share price moves, so their outcomes are dependent; the kept ones do
    not overlap. Each step jumps to the next admissible entry by binary search: O(kept · log n)."""
    e = _check_entry(entry, horizon)
    keep = np.zeros(e.size, dtype=bool)
    i = 0
    while i < e.size:
        keep[i] = True
        i = int(np.searchsorted(e, e[i] + horizon, side="left"))
    return keep


def effective_selection(selected: np.ndarray, entry: np.ndarray, horizon: int) -> np.ndarray:
    """``selected`` (n_points, n) thinned row by row: in each row, only the selected bars that
    :func:`thin_non_overlapping` keeps among that row's signals (``entry`` (n,) = the bars' sorted indices)."""
    sel = np.asarray(selected)
    if sel.dtype != np.bool_ or sel.ndim != 2:
        raise ValueError(f"selected must be a 2-D bool array, got dtype {sel.dtype} shape {sel.shape}")
    e = _check_entry(entry, horizon)
    if sel.shape[1] != e.size:
        raise ValueError(f"selected has {sel.shape[1]} columns but entry has {e.size} bars")
    out = np.zeros_like(sel)
    for k in range(sel.shape[0]):
        idx = np.flatnonzero(sel[k])
        out[k, idx[thin_non_overlapping(e[idx], horizon)]] = True
    return out


class PrecisionMonitor:
    """Online test of H0: live precision >= target, by a betting e-process (Waudby-Smith & Ramdas 2023, *Estimating
    means of bounded random variables by betting*, JRSS-B, the capital process K_t^-(m); Shafer 2021; Ville's
    inequality):

        K_t = prod_{i <= t} (1 + λ_i (target - X_i)),   X_i = 1 if signal i was correct.

    The bet λ_i is predictable (a function of X_1..X_{i-1} only) and lies in [0, c/(1-target)] with c = 0.5 < 1, so
    every factor is >= 1 - c > 0. Under H0, E[target - X_i | past] <= 0 and λ_i >= 0, so K is a nonnegative
    supermartingale with K_0 = 1 and P(sup_t K_t >= 1/alpha) <= alpha (Ville): rejecting (halting) when
    K_t >= 1/alpha is an anytime-valid level-alpha test, at any stopping time.

    Betting strategy: aGRAPA (ibid., "approximate GRAPA", the growth-rate adaptive bet in closed form),
    λ_i = clip((target - μ̂_{i-1}) / (σ̂²_{i-1} + (target - μ̂_{i-1})²), 0, c/(1-target)), where μ̂ and σ̂² are
    exponentially weighted estimates of the mean and variance of X with half-life ``half_life`` signals, started at
    μ̂_0 = target, σ̂²_0 = target(1-target) (so λ_1 = 0). Any predictable λ keeps the guarantee; the exponential
    weights (instead of WSR's running means) let the bet follow a drop that comes after a long good stretch.
    After the rejection the monitor is halted: later outcomes are not counted.
    """

    C = 0.5

    def __init__(self, target: float, alpha: float = 0.05, *, half_life: float = 100.0) -> None:
        self.target = _check_unit_open("target", target)
        self.alpha = _check_unit_open("alpha", alpha)
        hl = float(half_life)
        if not hl > 0 or not math.isfinite(hl):
            raise ValueError(f"half_life must be a positive number of signals, got {half_life!r}")
        self.half_life = hl
        self._decay = 0.5 ** (1.0 / hl)
        self._lam_max = self.C / (1.0 - self.target)
        self._log_threshold = math.log(1.0 / self.alpha)
        self.n = 0
        self.n_correct = 0
        self._log_k = 0.0
        self._mu = self.target
        self._var = self.target * (1.0 - self.target)
        self.rejected = False
        self.rejected_at: int | None = None

    @property
    def e_value(self) -> float:
        """The current wealth K_t (K_0 = 1); kept as a log so that long streams neither underflow nor overflow."""
        return math.exp(self._log_k) if self._log_k < 700 else math.inf

    def bet(self) -> float:
        """λ for the next signal (aGRAPA, from the outcomes so far only)."""
        g = self.target - self._mu
        lam = g / (self._var + g * g) if g > 0 else 0.0
        return min(lam, self._lam_max)

    def update(self, correct: bool) -> bool:
        """Account one live signal's outcome; True once H0 is rejected (and from then on: the monitor halts)."""
        if self.rejected:
            return True
        x = 1.0 if correct else 0.0
        lam = self.bet()
        self._log_k += math.log1p(lam * (self.target - x))
        self.n += 1
        self.n_correct += int(x)
        # the estimates for the next bet: x enters only after it has been bet on
        self._var = self._decay * self._var + (1.0 - self._decay) * (x - self._mu) ** 2
        self._mu = self._decay * self._mu + (1.0 - self._decay) * x
        if self._log_k >= self._log_threshold:
            self.rejected = True
            self.rejected_at = self.n
        return self.rejected

    def state_dict(self) -> dict[str, np.ndarray | float | int]:
        """Everything needed to continue the stream, as plain numbers (``rejected_at`` -1 for None)."""
        return {
            "target": self.target,
            "alpha": self.alpha,
            "half_life": self.half_life,
            "n": self.n,
            "n_correct": self.n_correct,
            "log_e_value": self._log_k,
            "mu": self._mu,
            "var": self._var,
            "rejected": int(self.rejected),
            "rejected_at": -1 if self.rejected_at is None else self.rejected_at,
        }

    def load_state_dict(self, d: dict[str, np.ndarray | float | int]) -> None:
        """Restore :meth:`state_dict`'s output; refuses a state of a different target, alpha or half-life."""
        for key in ("target", "alpha", "half_life"):
            if float(d[key]) != getattr(self, key):
                raise ValueError(f"state is for {key} {float(d[key])!r}, this monitor has {getattr(self, key)!r}")
        n, n_correct, rejected_at = int(d["n"]), int(d["n_correct"]), int(d["rejected_at"])
        if not 0 <= n_correct <= n:
            raise ValueError(f"state has n_correct {n_correct} outside [0, n={n}]")
        self.n, self.n_correct = n, n_correct
        self._log_k = float(d["log_e_value"])
        self._mu = float(d["mu"])
        self._var = float(d["var"])
        self.rejected = bool(int(d["rejected"]))
        self.rejected_at = None if rejected_at < 0 else rejected_at

    def reason(self) -> str:
        """One line: why the monitor halted, or where it stands."""
        t, thr = self.target, 1.0 / self.alpha
        if self.rejected:
            return (
                f"live precision below {t:.2f}: e-value {self.e_value:.1f} >= 1/alpha = {thr:g} "
                f"after {self.n} signals ({self.n_correct} correct)"
            )
        return (
            f"live precision not shown below {t:.2f}: e-value {self.e_value:.2f} < 1/alpha = {thr:g} "
            f"after {self.n} signals ({self.n_correct} correct)"
        )
