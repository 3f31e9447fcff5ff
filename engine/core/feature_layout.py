"""The feature engine's output layout: the column names in order (Qlib's Alpha158 order — family, then window —
then the realized-volatility and time columns). Foundation, so that the feature kernels (``fxgate.models``) and a
module that names features in its config (``fxgate.modules.factor_weighting``) read one list."""

from __future__ import annotations

__all__ = ["WINDOWS", "KBAR", "PRICE", "ROLLING", "VOL", "TIME", "N_ALPHA", "N_FEATURES", "feature_names"]

WINDOWS = (5, 10, 20, 30, 60)
KBAR = ("KMID", "KLEN", "KMID2", "KUP", "KUP2", "KLOW", "KLOW2", "KSFT", "KSFT2")
PRICE = ("OPEN0", "HIGH0", "LOW0")
ROLLING = (
    "ROC",
    "MA",
    "STD",
    "BETA",
    "RSQR",
    "RESI",
    "MAX",
    "MIN",
    "QTLU",
    "QTLD",
    "RANK",
    "RSV",
    "IMAX",
    "IMIN",
    "IMXD",
    "CORR",
    "CORD",
    "CNTP",
    "CNTN",
    "CNTD",
    "SUMP",
    "SUMN",
    "SUMD",
    "VMA",
    "VSTD",
    "WVMA",
    "VSUMP",
    "VSUMN",
    "VSUMD",
)
VOL = ("RV_D", "RV_W", "RV_M", "BV_D", "BNS_Z", "LM")
TIME = ("TOD_SIN", "TOD_COS", "DOW", "SESS_ASIA", "SESS_LONDON", "SESS_NY", "SPREAD_REL")


def feature_names() -> list[str]:
    """Feature names in output order (Qlib's order: family, then window)."""
    names = list(KBAR) + list(PRICE)
    names += [f"{f}{w}" for f in ROLLING for w in WINDOWS]
    return names + list(VOL) + list(TIME)


N_ALPHA = len(KBAR) + len(PRICE) + len(ROLLING) * len(WINDOWS)
N_FEATURES = N_ALPHA + len(VOL) + len(TIME)
