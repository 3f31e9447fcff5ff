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

Kernel state (``_vpin_step``; the slots are module-level ints)::

    fs   F_PREV_CLOSE    P_{t-1}, the last close
         F_BUCKET_VOL    volume in the bucket being filled
         F_BUCKET_BUY    its buy volume V_buy
         F_BUCKET_SIZE   V_b (0 while it is being calibrated)
         F_IMB_SUM       Σ OI_τ over the last n buckets
         F_VPIN          VPIN after the last completed bucket
         F_THRESHOLD     the rolling quantile of VPIN before that bucket (the pass threshold)
         F_CALIB_VOL     volume summed over the calibration bars
    ist  I_BARS          good bars seen
         I_CHANGES       close-to-close changes ΔP pushed into ``dp``
         I_BUCKETS       buckets completed
         I_HISTORY       VPIN values pushed into the history window
    dp                   ring of the last ``sigma_window`` ΔP (σ_ΔP)
    imb                  ring of the last n bucket imbalances OI_τ
    hist, srt, hst       the VPIN history: a sorted window (``fxgate.modules._common``)
"""

from __future__ import annotations

import math

import numpy as np

from fxgate.engine.core.bars import Bar, timeframe_seconds
from fxgate.engine.core.jit import kernel
from fxgate.modules._base import CertaintyModule, Context, ModuleResult, insufficient, register
from fxgate.modules._common import SW_N, sw_push, sw_quantile
from fxgate.modules._fusion import FusedStep

F_PREV_CLOSE, F_BUCKET_VOL, F_BUCKET_BUY, F_BUCKET_SIZE, F_IMB_SUM, F_VPIN, F_THRESHOLD, F_CALIB_VOL = range(8)
I_BARS, I_CHANGES, I_BUCKETS, I_HISTORY = range(4)


def _vpin_step_py(fs, ist, dp, imb, hist, srt, hst, close, volume, sigma_window, n_buckets, quantile, calib_bars, bpb):  # type: ignore[no-untyped-def]
    """One bar of VPIN: classify its volume (BVC), fill buckets, and on each completed bucket update VPIN and its
    rolling pass threshold. State slots: the module docstring."""
    bars = ist[I_BARS]
    ist[I_BARS] = bars + 1
    if bars == 0:
        fs[F_PREV_CLOSE] = close
        fs[F_CALIB_VOL] += volume
        return
    d = close - fs[F_PREV_CLOSE]
    fs[F_PREV_CLOSE] = close
    w = dp.shape[0]
    dp[ist[I_CHANGES] % w] = d
    ist[I_CHANGES] += 1
    if fs[F_BUCKET_SIZE] <= 0.0:  # bucket size still being calibrated
        fs[F_CALIB_VOL] += volume
        if ist[I_BARS] >= calib_bars:
            fs[F_BUCKET_SIZE] = fs[F_CALIB_VOL] / ist[I_BARS] * bpb
        return
    nd = ist[I_CHANGES]
    m = min(nd, sigma_window)
    if m < 2 or volume <= 0.0:
        return
    mean = 0.0
    for k in range(m):
        mean += dp[(nd - 1 - k) % w]
    mean /= m
    ss = 0.0
    for k in range(m):
        e = dp[(nd - 1 - k) % w] - mean
        ss += e * e
    sd = math.sqrt(ss / (m - 1))
    share = 0.5 if sd <= 0.0 else 0.5 * (1.0 + math.erf(d / sd / math.sqrt(2.0)))
    remaining = volume
    vb = fs[F_BUCKET_SIZE]
    nb = imb.shape[0]
    while remaining > 0.0:
        take = min(vb - fs[F_BUCKET_VOL], remaining)
        fs[F_BUCKET_VOL] += take
        fs[F_BUCKET_BUY] += take * share
        remaining -= take
        if fs[F_BUCKET_VOL] >= vb * (1.0 - 1e-12):
            oi = abs(2.0 * fs[F_BUCKET_BUY] - fs[F_BUCKET_VOL])
            k = ist[I_BUCKETS]
            if k >= n_buckets:
                fs[F_IMB_SUM] -= imb[(k - n_buckets) % nb]
            imb[k % nb] = oi
            fs[F_IMB_SUM] += oi
            ist[I_BUCKETS] = k + 1
            fs[F_BUCKET_VOL] = 0.0
            fs[F_BUCKET_BUY] = 0.0
            if ist[I_BUCKETS] >= n_buckets:
                v = fs[F_IMB_SUM] / (n_buckets * vb)
                # the pass threshold comes from the history *before* this bucket
                if hst[SW_N] > 0:
                    fs[F_THRESHOLD] = sw_quantile(srt, hst, quantile)
                sw_push(srt, hist, hst, v)
                ist[I_HISTORY] += 1
                fs[F_VPIN] = v


_vpin_step = kernel(_vpin_step_py, fastmath=False)


def _vpin_fused_py(fs, ist, dp, imb, hist, srt, hst, close, volume, sigma_window, n_buckets, quantile, calib_bars, bpb):  # type: ignore[no-untyped-def]
    """``VPIN.update`` in the fused step (``fxgate.modules._fusion``): a bad bar is skipped, a good one stepped."""
    if math.isfinite(close) and close > 0 and math.isfinite(volume) and volume >= 0:
        _vpin_step(fs, ist, dp, imb, hist, srt, hst, close, volume, sigma_window, n_buckets, quantile, calib_bars, bpb)


_vpin_fused = kernel(_vpin_fused_py, fastmath=False)


@register("vpin")
class Vpin(CertaintyModule):
    title = "VPIN"
    formula = "sum |V_buy - V_sell| / (n V_bucket)"
    citation = "Easley, Lopez de Prado & O'Hara (2012)"
    rule = "VPIN <= its rolling `quantile` (0.9) over the last `history` buckets (rule=absolute: VPIN < `absolute`)"
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
        self.hist = np.zeros(int(p["history"]))
        self.srt = np.zeros(int(p["history"]))
        self.hst = np.zeros(2, dtype=np.int64)
        self._bpb_cache: dict[str, float] = {}
        self.fs[F_THRESHOLD] = np.nan
        if p["bucket_volume"] is not None:
            self.fs[F_BUCKET_SIZE] = float(p["bucket_volume"])

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

    def fused_step(self, timeframe: str) -> FusedStep:
        p = self.params
        params = (
            int(p["sigma_window"]),
            int(p["n_buckets"]),
            float(p["quantile"]),
            int(p["calib_bars"]),
            self._bpb(timeframe),
        )
        return FusedStep(_vpin_fused, self.state_keys, ("close", "volume"), params)

    @property
    def value(self) -> float:
        return float(self.fs[F_VPIN]) if self.ist[I_BUCKETS] >= self.params["n_buckets"] else math.nan

    def verdict(self) -> ModuleResult:
        p = self.params
        nb = int(self.ist[I_BUCKETS])
        if p["rule"] == "absolute":
            if nb < p["n_buckets"]:
                return insufficient(self.name, nb, p["n_buckets"], p["absolute"], "volume buckets")
            v = self.value
            ok = v < p["absolute"]
            return self._result(v, ok, p["absolute"], lambda: f"VPIN {v:.3f} {'<' if ok else '>='} {p['absolute']}")
        have = int(self.ist[I_HISTORY]) - 1  # values before the current one
        if have < p["min_history"]:
            return insufficient(self.name, max(0, have), p["min_history"], math.nan, "VPIN buckets of history")
        v, q = self.value, float(self.fs[F_THRESHOLD])
        ok = v <= q
        return self._result(
            v,
            ok,
            q,
            lambda: (
                f"VPIN {v:.3f} {'<=' if ok else '>'} its rolling {p['quantile']:.0%} quantile {q:.3f} "
                "(tick-volume proxy)"
            ),
        )

    def warm_up(self) -> None:
        tmp = Vpin(bucket_volume=1.0, n_buckets=2, history=4, min_history=1)
        for i in range(6):
            tmp.update(Context(Bar(i, 1.0, 1.0, 1.0, 1.0 + 0.001 * (i % 2), 1.5, timeframe="H1")))
