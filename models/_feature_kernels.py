"""The per-bar feature kernel behind :class:`fxgate.models.features.FeatureEngine`: the state it keeps and the
compiled kernels with their plain-Python twins (each ``*_py`` function is the readable twin; the compiled one has the
same name without ``_py``). The output layout (names in order) is ``fxgate.engine.core.feature_layout``; the
feature definitions and their sources are in ``fxgate.models.features``.

State of ``_update`` (slots are module-level ints: numba freezes them into the compiled kernel)::

    ring     (5 × HIST)  rows R_OPEN R_HIGH R_LOW R_CLOSE R_VOLUME: the last HIST bars, column = bar count % HIST
    rv_ring  (3 × RCAP)  rows of the realized-volatility products, column = product count % RCAP
                         (RCAP = 22·B + 4 covers the 22-day window):
             RV_R2       r_t², the squared one-bar log return
             RV_BP       |r_t|·|r_{t−1}|, the bipower product
             RV_TP       (|r_t|·|r_{t−1}|·|r_{t−2}|)^{4/3}, the tripower product
    ist      I_BARS          bars pushed
             I_RETURNS       squared returns pushed into RV_R2 (bars − 1)
             I_BIPOWER       bipower products pushed into RV_BP
             I_TRIPOWER      tripower products pushed into RV_TP
             I_SINCE_EXACT   returns since the running sums were last recomputed exactly
    fst      F_PREV_CLOSE    P_{t−1}, the last close
             F_ABS_R1        |r_{t−1}| (after the bar: |r_t|)
             F_ABS_R2        |r_{t−2}|
             F_RV_D          Σ r² over the last B returns            (RV_D; F_RV_D, F_RV_W, F_RV_M are consecutive)
             F_RV_W          Σ r² over the last 5B                   (RV_W × 5)
             F_RV_M          Σ r² over the last 22B                  (RV_M × 22)
             F_BV_SUM        Σ |r_t r_{t−1}| over the last B         (BV_D × 2/π)
             F_TQ_SUM        Σ |r_t r_{t−1} r_{t−2}|^{4/3} over the last B   (tripower quarticity × μ_{4/3}³ / B)
             F_LM_SUM        Σ |r_t r_{t−1}| over the K − 2 before this bar  (Lee-Mykland σ² × (K − 2))

Call shape (as for the module kernels, ``fxgate.modules._base``): state arrays, then the bar's values (ts, o, h, l,
c, v, spread), then parameters (B = ``bpd``, K = ``lm_k``), then the output row ``out`` it fills.
"""

from __future__ import annotations

import math

import numpy as np

from fxgate.engine.core.feature_layout import N_ALPHA, WINDOWS
from fxgate.engine.core.jit import kernel

HIST = 64  # ring capacity for Alpha158 (max window 60 + Ref(., 1))
_MU43 = 2 ** (2 / 3) * math.gamma(7 / 6) / math.gamma(1 / 2)  # E|Z|^{4/3} for standard normal Z
_BNS_THETA = (math.pi / 2) ** 2 + math.pi - 5


R_OPEN, R_HIGH, R_LOW, R_CLOSE, R_VOLUME = range(5)
RV_R2, RV_BP, RV_TP = range(3)
I_BARS, I_RETURNS, I_BIPOWER, I_TRIPOWER, I_SINCE_EXACT = range(5)
F_PREV_CLOSE, F_ABS_R1, F_ABS_R2, F_RV_D, F_RV_W, F_RV_M, F_BV_SUM, F_TQ_SUM, F_LM_SUM = range(9)


def _window_stats_py(h, lo, c, v, lv1, rr, lvv, wvv, srt, m, d, out, k):  # type: ignore[no-untyped-def]
    """Alpha158 rolling features for window ``d`` from chronological arrays of the last ``m`` bars
    (``c[m-1]`` is the current bar). Writes 29 values into out[k], out[k+5], ... (family-major order).

    The per-bar terms shared by every window come precomputed (:func:`_update` fills them once per bar):
    ``lv1[i] = log(v[i] + 1)``; for i >= 1 the one-bar terms ``rr[i] = c[i]/c[i-1]``, ``lvv[i]`` the log volume
    change and ``wvv[i] = |c[i]/c[i-1] - 1| * v[i]``; ``srt[:d]`` holds the last ``d`` closes sorted (NaN last, as
    ``np.sort``)."""
    nan = np.nan
    W = len(WINDOWS_ARR)
    cur = c[m - 1]
    full = m >= d  # window of d bars
    full1 = m >= d + 1  # window of d one-bar changes needs d + 1 bars
    if not full:
        for j in range(29):
            out[k + j * W] = nan
        return
    s = m - d
    # ROC = Ref($close, d)/$close: the close d bars before the current one
    roc = c[m - 1 - d] / cur if full1 else nan
    mean, ss = _mean_ss(c, s, m)
    std = math.sqrt(ss / (d - 1)) if d > 1 else nan
    # OLS of c on x = 1..d
    xm = (d + 1) / 2.0
    sxx = 0.0
    sxy = 0.0
    for i in range(d):
        dx = (i + 1) - xm
        sxx += dx * dx
        sxy += dx * (c[s + i] - mean)
    slope = sxy / sxx
    intercept = mean - slope * xm
    rsq = (sxy * sxy) / (sxx * ss) if ss > 0 else nan
    resi = cur - (intercept + slope * d)
    # MAX, MIN, IMAX, IMIN
    hmax = h[s]
    imax = 0
    lmin = lo[s]
    imin = 0
    for i in range(1, d):
        if h[s + i] > hmax:
            hmax = h[s + i]
            imax = i
        if lo[s + i] < lmin:
            lmin = lo[s + i]
            imin = i
    # QTLU, QTLD (linear interpolation), RANK (percentile of the last value, ties averaged)
    buf = srt[0:d]
    qu = _quantile_sorted(buf, 0.8)
    qd = _quantile_sorted(buf, 0.2)
    less = 0
    equal = 0
    for i in range(s, m):
        if c[i] < cur:
            less += 1
        elif c[i] == cur:
            equal += 1
    rank = (less + 0.5 * (equal + 1)) / d if equal > 0 else (less + 1.0) / d
    # CORR(close, log(volume + 1))
    corr = _corr(c[s:m], lv1[s:m])
    vmean, vss = _mean_ss(v, s, m)
    vstd = math.sqrt(vss / (d - 1)) if d > 1 else nan
    vcur = v[m - 1]
    # one-bar change families need d + 1 bars
    if full1:
        up, dn, ab, vup, vdn, vab, cntp, cntn = _change_sums(c, v, s, d)
        cord = _corr(rr[s:m], lvv[s:m])
        wmean, wss = _mean_ss(wvv[s:m], 0, d)
        wstd = math.sqrt(wss / (d - 1)) if d > 1 else nan
        cntp /= d
        cntn /= d
        sump = up / (ab + 1e-12)
        sumn = dn / (ab + 1e-12)
        sumd = (up - dn) / (ab + 1e-12)
        vsump = vup / (vab + 1e-12)
        vsumn = vdn / (vab + 1e-12)
        vsumd = (vup - vdn) / (vab + 1e-12)
        wvma = wstd / (wmean + 1e-12)
        cntd = cntp - cntn
    else:
        cord = cntp = cntn = cntd = sump = sumn = sumd = wvma = vsump = vsumn = vsumd = nan
    vals = (
        roc,
        mean / cur,
        std / cur,
        slope / cur,
        rsq,
        resi / cur,
        hmax / cur,
        lmin / cur,
        qu / cur,
        qd / cur,
        rank,
        (cur - lmin) / (hmax - lmin + 1e-12),
        (imax + 1.0) / d,
        (imin + 1.0) / d,
        (imax - imin) / d,
        corr,
        cord,
        cntp,
        cntn,
        cntd,
        sump,
        sumn,
        sumd,
        vmean / (vcur + 1e-12),
        vstd / (vcur + 1e-12),
        wvma,
        vsump,
        vsumn,
        vsumd,
    )
    for j in range(29):
        out[k + j * W] = vals[j]


def _change_sums_py(c, v, s, d):  # type: ignore[no-untyped-def]
    """Sums over the ``d`` one-bar changes ending at ``c[s + d - 1]``: rises, falls and absolute changes of the close
    and of the volume, and the counts of rises and falls. Added strictly in bar order: compiled *without*
    reassociation (``fastmath=False``), so LLVM cannot split the sums into vector lanes — the features are the
    sequential sums, whatever else the loop holds."""
    up = 0.0
    dn = 0.0
    ab = 0.0
    vup = 0.0
    vdn = 0.0
    vab = 0.0
    cntp = 0.0
    cntn = 0.0
    for i in range(d):
        j = s + i
        prev = c[j - 1]
        diff = c[j] - prev
        if diff > 0:
            up += diff
            cntp += 1
        elif diff < 0:
            dn -= diff
            cntn += 1
        ab += abs(diff)
        vd = v[j] - v[j - 1]
        if vd > 0:
            vup += vd
        elif vd < 0:
            vdn -= vd
        vab += abs(vd)
    return up, dn, ab, vup, vdn, vab, cntp, cntn


def _extend_sorted_py(c, m, srt, tmp, n, d):  # type: ignore[no-untyped-def]
    """``srt[:n]`` holds the last ``n`` of ``c[:m]`` sorted; sort the older ones down to ``c[m-d]`` (into ``tmp``,
    by insertion) and merge them in, so that ``srt[:d]`` holds the last ``d`` sorted (NaN last, as ``np.sort``).
    Returns ``d``."""
    k = 0
    for i in range(m - d, m - n):
        x = c[i]
        p = k
        if x == x:
            while p > 0 and not (tmp[p - 1] <= x):
                tmp[p] = tmp[p - 1]
                p -= 1
        tmp[p] = x
        k += 1
    # merge from the top: the larger (NaN largest) of the two heads goes to the highest free slot
    i = n - 1
    j = k - 1
    for t in range(d - 1, -1, -1):
        if j < 0:
            break
        if i >= 0 and (srt[i] > tmp[j] or (srt[i] != srt[i] and tmp[j] == tmp[j])):
            srt[t] = srt[i]
            i -= 1
        else:
            srt[t] = tmp[j]
            j -= 1
    return d


def _mean_ss_py(a, s, m):  # type: ignore[no-untyped-def]
    """Mean and sum of squared deviations of a[s:m] (two passes, as pandas' rolling var is exact to ~1e-15)."""
    mean = 0.0
    for i in range(s, m):
        mean += a[i]
    mean /= m - s
    ss = 0.0
    for i in range(s, m):
        ss += (a[i] - mean) ** 2
    return mean, ss


def _quantile_sorted_py(a, q):  # type: ignore[no-untyped-def]
    """Linear-interpolation quantile (numpy's default, pandas' rolling quantile) of a sorted array."""
    pos = q * (len(a) - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(a) - 1)
    return a[lo] + (a[hi] - a[lo]) * (pos - lo)


def _corr_py(x, y):  # type: ignore[no-untyped-def]
    """Pearson correlation; NaN when either side is constant or non-finite (as pandas returns)."""
    n = len(x)
    mx = 0.0
    my = 0.0
    for i in range(n):
        mx += x[i]
        my += y[i]
    mx /= n
    my /= n
    sxy = 0.0
    sxx = 0.0
    syy = 0.0
    for i in range(n):
        dx = x[i] - mx
        dy = y[i] - my
        sxy += dx * dy
        sxx += dx * dx
        syy += dy * dy
    if not (sxx > 0 and syy > 0) or not np.isfinite(sxy):
        return np.nan
    return sxy / math.sqrt(sxx * syy)


_mean_ss = kernel(_mean_ss_py)
_quantile_sorted = kernel(_quantile_sorted_py)
_corr = kernel(_corr_py)
_change_sums = kernel(_change_sums_py, fastmath=False)
WINDOWS_ARR = np.array(WINDOWS, dtype=np.int64)
assert (np.diff(WINDOWS_ARR) > 0).all() and WINDOWS_ARR[-1] <= 60  # _update sorts the windows nested
_window_stats = kernel(_window_stats_py)
_extend_sorted = kernel(_extend_sorted_py)


def _update_py(ring, rv_ring, ist, fst, ts, o, h, lo, c, v, spread, bpd, lm_k, out):  # type: ignore[no-untyped-def]
    """Push one bar and write all features of that bar into ``out`` (state slots: the module docstring).

    ``bpd`` is bars per day (B), ``lm_k`` the Lee-Mykland window K.
    """
    nan = np.nan
    cap = ring.shape[1]
    count = ist[I_BARS]
    pos = count % cap
    ring[R_OPEN, pos] = o
    ring[R_HIGH, pos] = h
    ring[R_LOW, pos] = lo
    ring[R_CLOSE, pos] = c
    ring[R_VOLUME, pos] = v
    count += 1
    ist[I_BARS] = count
    m = count if count < 61 else 61
    # the last m bars in order, and the per-bar terms every window shares, computed once (one scratch buffer)
    scr = np.empty(10 * 61)
    hh = scr[0:m]
    ll = scr[61 : 61 + m]
    cc = scr[122 : 122 + m]
    vv = scr[183 : 183 + m]
    lv1 = scr[244 : 244 + m]
    rr = scr[305 : 305 + m]
    lvv = scr[366 : 366 + m]
    wvv = scr[427 : 427 + m]
    srt = scr[488:549]
    tmp = scr[427 + 61 + 61 :]
    j = (count - m) % cap
    for i in range(m):
        hh[i] = ring[R_HIGH, j]
        ll[i] = ring[R_LOW, j]
        cc[i] = ring[R_CLOSE, j]
        vv[i] = ring[R_VOLUME, j]
        j += 1
        if j == cap:
            j = 0
    # only the bars (and one-bar changes) some full window covers, as the windows would touch them one by one
    p0 = m
    p1 = m
    for w in range(len(WINDOWS_ARR)):
        if m >= WINDOWS_ARR[w]:
            p0 = m - WINDOWS_ARR[w]
        if m >= WINDOWS_ARR[w] + 1:
            p1 = m - WINDOWS_ARR[w]
    for i in range(p0, m):
        lv1[i] = math.log(vv[i] + 1.0)
    for i in range(p1, m):
        prev = cc[i - 1]
        rr[i] = cc[i] / prev
        lvv[i] = math.log(vv[i] / vv[i - 1] + 1.0) if vv[i - 1] != 0 else (np.inf if vv[i] > 0 else nan)
        wvv[i] = abs(cc[i] / prev - 1.0) * vv[i]
    # KBAR and PRICE
    rng_ = h - lo + 1e-12
    top = o if o > c else c
    bot = o if o < c else c
    out[0] = (c - o) / o
    out[1] = (h - lo) / o
    out[2] = (c - o) / rng_
    out[3] = (h - top) / o
    out[4] = (h - top) / rng_
    out[5] = (bot - lo) / o
    out[6] = (bot - lo) / rng_
    out[7] = (2 * c - h - lo) / o
    out[8] = (2 * c - h - lo) / rng_
    out[9] = o / c
    out[10] = h / c
    out[11] = lo / c
    ns = 0
    for w in range(len(WINDOWS_ARR)):
        d = WINDOWS_ARR[w]
        if m >= d:
            ns = _extend_sorted(cc, m, srt, tmp, ns, d)
        _window_stats(hh, ll, cc, vv, lv1, rr, lvv, wvv, srt, m, d, out, 12 + w)
    # realized volatility family
    k = N_ALPHA
    rcap = rv_ring.shape[1]
    for j in range(6):
        out[k + j] = nan
    if count >= 2:
        r = math.log(c / fst[F_PREV_CLOSE])
        ar = abs(r)
        # squared returns over B, 5B, 22B
        n = ist[I_RETURNS]
        x = r * r
        out_idx = n % rcap
        for wi in range(3):
            win = bpd * (1 if wi == 0 else (5 if wi == 1 else 22))
            if n >= win:
                fst[F_RV_D + wi] -= rv_ring[RV_R2, (n - win) % rcap]
            fst[F_RV_D + wi] += x
        rv_ring[RV_R2, out_idx] = x
        n += 1
        ist[I_RETURNS] = n
        if count >= 3:
            # Lee-Mykland uses the K-2 bipower products *before* this bar
            nb = ist[I_BIPOWER]
            if nb >= lm_k - 2 and fst[F_LM_SUM] > 0:
                out[k + 5] = r / math.sqrt(fst[F_LM_SUM] / (lm_k - 2))
            y = ar * fst[F_ABS_R1]
            if nb >= bpd:
                fst[F_BV_SUM] -= rv_ring[RV_BP, (nb - bpd) % rcap]
            if nb >= lm_k - 2:
                fst[F_LM_SUM] -= rv_ring[RV_BP, (nb - (lm_k - 2)) % rcap]
            fst[F_BV_SUM] += y
            fst[F_LM_SUM] += y
            rv_ring[RV_BP, nb % rcap] = y
            nb += 1
            ist[I_BIPOWER] = nb
            if count >= 4:
                nt = ist[I_TRIPOWER]
                z = (ar * fst[F_ABS_R1] * fst[F_ABS_R2]) ** (4.0 / 3.0)
                if nt >= bpd:
                    fst[F_TQ_SUM] -= rv_ring[RV_TP, (nt - bpd) % rcap]
                fst[F_TQ_SUM] += z
                rv_ring[RV_TP, nt % rcap] = z
                ist[I_TRIPOWER] = nt + 1
        fst[F_ABS_R2] = fst[F_ABS_R1]
        fst[F_ABS_R1] = ar
        # bound floating drift of the running sums: recompute them exactly every 1024 returns
        ist[I_SINCE_EXACT] += 1
        if ist[I_SINCE_EXACT] >= 1024:
            ist[I_SINCE_EXACT] = 0
            _recompute_sums(rv_ring, ist, fst, bpd, lm_k)
        if n >= bpd:
            out[k + 0] = fst[F_RV_D]
        if n >= 5 * bpd:
            out[k + 1] = fst[F_RV_W] / 5.0
        if n >= 22 * bpd:
            out[k + 2] = fst[F_RV_M] / 22.0
        if ist[I_BIPOWER] >= bpd:
            bv = (math.pi / 2.0) * fst[F_BV_SUM]
            out[k + 3] = bv
            if ist[I_TRIPOWER] >= bpd and n >= bpd and fst[F_RV_D] > 0 and bv > 0:
                tq = bpd * fst[F_TQ_SUM] / _MU43**3
                rv = fst[F_RV_D]
                out[k + 4] = ((rv - bv) / rv) / math.sqrt(_BNS_THETA / bpd * max(1.0, tq / (bv * bv)))
    fst[F_PREV_CLOSE] = c
    # time of day, UTC day of week, sessions (UTC hours), relative spread
    k = N_ALPHA + 6
    sec = (ts // 1_000_000_000) % 86400
    ang = 2.0 * math.pi * sec / 86400.0
    out[k + 0] = math.sin(ang)
    out[k + 1] = math.cos(ang)
    out[k + 2] = float(((ts // 86_400_000_000_000) + 3) % 7)  # Monday = 0
    hour = sec // 3600
    out[k + 3] = 1.0 if (hour >= 23 or hour < 8) else 0.0
    out[k + 4] = 1.0 if (7 <= hour < 16) else 0.0
    out[k + 5] = 1.0 if (12 <= hour < 21) else 0.0
    out[k + 6] = spread / c


def _recompute_sums_py(rv_ring, ist, fst, bpd, lm_k):  # type: ignore[no-untyped-def]
    """Recompute the running sums F_RV_D .. F_LM_SUM exactly from ``rv_ring`` (bounds their floating drift)."""
    rcap = rv_ring.shape[1]
    n = ist[I_RETURNS]
    for wi in range(3):
        win = bpd * (1 if wi == 0 else (5 if wi == 1 else 22))
        t = 0.0
        for i in range(max(0, n - win), n):
            t += rv_ring[RV_R2, i % rcap]
        fst[F_RV_D + wi] = t
    nb = ist[I_BIPOWER]
    t = 0.0
    for i in range(max(0, nb - bpd), nb):
        t += rv_ring[RV_BP, i % rcap]
    fst[F_BV_SUM] = t
    t = 0.0
    for i in range(max(0, nb - (lm_k - 2)), nb):
        t += rv_ring[RV_BP, i % rcap]
    fst[F_LM_SUM] = t
    nt = ist[I_TRIPOWER]
    t = 0.0
    for i in range(max(0, nt - bpd), nt):
        t += rv_ring[RV_TP, i % rcap]
    fst[F_TQ_SUM] = t


def _batch_py(ring, rv_ring, ist, fst, ts, o, h, lo, c, v, spread, bpd, lm_k, out):  # type: ignore[no-untyped-def]
    """The per-bar kernel run across history: row i of ``out`` is exactly what ``update`` returns for bar i."""
    for i in range(len(c)):
        _update(ring, rv_ring, ist, fst, ts[i], o[i], h[i], lo[i], c[i], v[i], spread[i], bpd, lm_k, out[i])


_recompute_sums = kernel(_recompute_sums_py)
_update = kernel(_update_py)
_batch = kernel(_batch_py)
