"""VPIN — volume-synchronized probability of informed trading (Easley, López de Prado & O'Hara 2012,
*Flow toxicity and liquidity in a high-frequency world*, RFS 25(5)).

Volume is classified by bulk volume classification (BVC, ibid. §2): a bar's volume V splits into buy volume
V·Φ(ΔP/σ_ΔP) and sell volume V·(1 − Φ(ΔP/σ_ΔP)), with ΔP the close-to-close change and σ_ΔP the sample standard
deviation of the last ``sigma_window`` changes. Volume fills equal-volume buckets of size V_b (a bar that overflows
a bucket carries its remainder, with the same buy share, into the next). With OI_τ = |V_buy,τ − V_sell,τ| per
bucket, VPIN = Σ_{last n buckets} OI_τ / (n · V_b).

On FX there is no traded volume, only *tick* volume (the number of quote updates), so this is a volatility-scaled
proxy of one-sided flow, not of informed trading in the paper's sense.

Pass rule (default ``rule="quantile"``): VPIN at most its own rolling ``quantile`` (0.9) over the last ``history``
completed buckets — "not in the most toxic tenth of its own recent past". ``rule="absolute"`` applies the original
design's fixed rule VPIN < ``absolute`` (0.3). Bucket size: ``bucket_volume``, or (default) the mean volume of the
first ``calib_bars`` bars times ``bars_per_bucket`` (default: a fiftieth of a day's bars, at least 1, as the paper
uses 50 buckets a day).
"""

from __future__ import annotations

import math

import numpy as np

from fxgate.engine.core.bars import timeframe_seconds
from fxgate.engine.core.jit import kernel
from fxgate.modules._base import CertaintyModule, Context, ModuleResult, insufficient, register
from fxgate.modules._common import sw_push, sw_quantile

# float state: 0 prev_close, 1 bucket_vol, 2 bucket_buy, 3 bucket_size, 4 imb_sum, 5 vpin, 6 q_threshold, 7 calib_vol
# int state:   0 bars, 1 n_dp, 2 n_buckets, 3 n_hist


def _vpin_step_py(fs, ist, dp, imb, hist, srt, hst, close, volume, sigma_window, n_buckets, quantile, calib_bars, bpb):  # type: ignore[no-untyped-def]  # noqa: E501
    bars = ist[0]
    ist[0] = bars + 1
    if bars == 0:
        fs[0] = close
        fs[7] += volume
        return
    d = close - fs[0]
    fs[0] = close
    w = dp.shape[0]
    dp[ist[1] % w] = d
    ist[1] += 1
    if fs[3] <= 0.0:  # bucket size still being calibrated
        fs[7] += volume
        if ist[0] >= calib_bars:
            fs[3] = fs[7] / ist[0] * bpb
        return
    m = min(ist[1], sigma_window)
    if m < 2 or volume <= 0.0:
        return
    mean = 0.0
    for k in range(m):
        mean += dp[(ist[1] - 1 - k) % w]
    mean /= m
    ss = 0.0
    for k in range(m):
        e = dp[(ist[1] - 1 - k) % w] - mean
        ss += e * e
    sd = math.sqrt(ss / (m - 1))
    share = 0.5 if sd <= 0.0 else 0.5 * (1.0 + math.erf(d / sd / math.sqrt(2.0)))
    remaining = volume
    vb = fs[3]
    nb = imb.shape[0]
    while remaining > 0.0:
        take = min(vb - fs[1], remaining)
        fs[1] += take
        fs[2] += take * share
        remaining -= take
        if fs[1] >= vb * (1.0 - 1e-12):
            oi = abs(2.0 * fs[2] - fs[1])
            k = ist[2]
            if k >= n_buckets:
                fs[4] -= imb[(k - n_buckets) % nb]
            imb[k % nb] = oi
            fs[4] += oi
            ist[2] = k + 1
            fs[1] = 0.0
            fs[2] = 0.0
            if ist[2] >= n_buckets:
                v = fs[4] / (n_buckets * vb)
                # the pass threshold comes from the history *before* this bucket
                if hst[1] > 0:
                    fs[6] = sw_quantile(srt, hst[1], quantile)
                sw_push(srt, hist, hst, v)
                ist[3] += 1
                fs[5] = v


_vpin_step = kernel(_vpin_step_py)


@register("vpin")
class Vpin(CertaintyModule):
    title = "VPIN"
    formula = "sum |V_buy - V_sell| / (n V_bucket)"
    citation = "Easley, Lopez de Prado & O'Hara (2012)"
    defaults = {
        "sigma_window": 100,
        "n_buckets": 50,
        "history": 500,
        "min_history": 100,
        "quantile": 0.9,
        "rule": "quantile",
        "absolute": 0.3,
        "bucket_volume": None,
        "bars_per_bucket": None,
        "calib_bars": 100,
    }
    state_keys = ("fs", "ist", "dp", "imb", "hist", "srt", "hst")

    def reset(self) -> None:
        p = self.params
        if p["rule"] not in ("quantile", "absolute"):
            raise ValueError(f"vpin rule {p['rule']!r} is not allowed; use 'quantile' or 'absolute'")
        self.fs = np.zeros(8)
        self.ist = np.zeros(4, dtype=np.int64)
        self.dp = np.zeros(int(p["sigma_window"]))
        self.imb = np.zeros(int(p["n_buckets"]))
        self.hist = np.zeros(int(p["history"]))  # VPIN history in arrival order
        self.srt = np.zeros(int(p["history"]))  # the same values, sorted
        self.hst = np.zeros(2, dtype=np.int64)
        self._bpb_cache: dict[str, float] = {}
        self.fs[6] = np.nan
        if p["bucket_volume"] is not None:
            self.fs[3] = float(p["bucket_volume"])

    def _bpb(self, timeframe: str) -> float:
        hit = self._bpb_cache.get(timeframe)
        if hit is None:
            hit = self._bpb_cache[timeframe] = self._bars_per_bucket(timeframe)
        return hit

    def _bars_per_bucket(self, timeframe: str) -> float:
        if self.params["bars_per_bucket"] is not None:
            return float(self.params["bars_per_bucket"])
        try:
            per_day = 86400 / timeframe_seconds(timeframe)
        except ValueError:
            per_day = 50.0
        return max(1.0, per_day / 50.0)

    def update(self, ctx: Context) -> None:
        b = ctx.bar
        if not (math.isfinite(b.close) and b.close > 0 and math.isfinite(b.volume) and b.volume >= 0):
            return  # a bad bar is skipped: the next good one continues from the last good state
        p = self.params
        _vpin_step(
            self.fs,
            self.ist,
            self.dp,
            self.imb,
            self.hist,
            self.srt,
            self.hst,
            b.close,
            b.volume,
            p["sigma_window"],
            p["n_buckets"],
            float(p["quantile"]),
            p["calib_bars"],
            self._bpb(b.timeframe),
        )

    @property
    def value(self) -> float:
        return float(self.fs[5]) if self.ist[2] >= self.params["n_buckets"] else math.nan

    def verdict(self) -> ModuleResult:
        p = self.params
        nb = int(self.ist[2])
        if p["rule"] == "absolute":
            if nb < p["n_buckets"]:
                return insufficient(self.name, nb, p["n_buckets"], p["absolute"], "volume buckets")
            v = self.value
            ok = v < p["absolute"]
            return self._result(v, ok, p["absolute"], f"VPIN {v:.3f} {'<' if ok else '>='} {p['absolute']}")
        have = int(self.ist[3]) - 1  # values before the current one
        if have < p["min_history"]:
            return insufficient(self.name, max(0, have), p["min_history"], math.nan, "VPIN buckets of history")
        v, q = self.value, float(self.fs[6])
        ok = v <= q
        return self._result(
            v,
            ok,
            q,
            f"VPIN {v:.3f} {'<=' if ok else '>'} its rolling {p['quantile']:.0%} quantile {q:.3f} (tick-volume proxy)",
        )

    def warm_up(self) -> None:
        from fxgate.engine.core.bars import Bar

        tmp = Vpin(bucket_volume=1.0, n_buckets=2, history=4, min_history=1)
        sw_quantile(np.zeros(2), 2, 0.5)
        for i in range(6):
            tmp.update(Context(Bar(i, 1.0, 1.0, 1.0, 1.0 + 0.001 * (i % 2), 1.5, timeframe="H1")))
