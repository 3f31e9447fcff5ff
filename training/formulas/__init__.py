"""The formula catalogue: what the original design called "1,183 formulas", as entries that are executable where
they can be computed on bars, described (with a citation) where they cannot, and never counted twice.

Each :class:`Formula` has a name, a category, a citation, the formula as text, and — when it is computable on one
price series (or on a signal and its realized returns) — the fxgate function that computes it. Every computable
entry is tested against an independent reference (a naive loop, numpy/scipy, or a closed form). The catalogue
generates the formula-knowledge SFT samples (:func:`sft_samples`); ``fxgate train formulas --list`` prints every
entry — name, category, formula, citation, and whether fxgate computes it or only describes it — per category
(:func:`listing`, ``--category`` to show one), with the counts.

Categories: ``alpha158`` (the features fxgate computes; Qlib's expressions), ``alpha101`` (Kakushadze 2016, the
alphas that need no cross-sectional rank), ``volatility``, ``microstructure``, ``risk``, ``execution``,
``certainty_modules`` (the 18 of the design, VPIN among them; the built ones are read from the modules
themselves), ``techniques`` (the 14 the original design added on 2026-01-25; four of them — FEDformer, WaveNet
TCN, FreEformer, A3C — are model architectures, described, not computed).

Layout: :mod:`~fxgate.training.formulas.operators` (causal ``delay``/``delta``/``ts_*``),
:mod:`~fxgate.training.formulas.alpha101` and :mod:`~fxgate.training.formulas.reference` (the formulas computed
here), :mod:`~fxgate.training.formulas.catalogue` (the entries), :mod:`~fxgate.training.formulas.queries` (listing,
counts, SFT samples). This package re-exports all of it.
"""

from fxgate.training.formulas.alpha101 import (
    alpha009,
    alpha012,
    alpha023,
    alpha024,
    alpha041,
    alpha046,
    alpha049,
    alpha051,
    alpha053,
    alpha054,
    alpha101,
)
from fxgate.training.formulas.catalogue import CATALOGUE, CATEGORIES, Formula
from fxgate.training.formulas.operators import delay, delta, ts_max, ts_min, ts_sum
from fxgate.training.formulas.queries import by_category, counts, listing, rows, sft_samples
from fxgate.training.formulas.reference import (
    amihud,
    cvar_historical,
    ewma_variance,
    factor_half_life,
    factor_neutralize,
    factor_turnover,
    garman_klass,
    ic_decay,
    implementation_shortfall,
    mad_winsorize,
    max_drawdown,
    parkinson,
    rank_ic,
    rogers_satchell,
    roll_spread,
    sharpe,
    sortino,
    tick_imbalance_bars,
    treynor,
    twap,
    var_historical,
)

__all__ = [
    # the catalogue and its queries
    "Formula",
    "CATALOGUE",
    "CATEGORIES",
    "by_category",
    "counts",
    "listing",
    "rows",
    "sft_samples",
    # causal operators
    "delay",
    "delta",
    "ts_max",
    "ts_min",
    "ts_sum",
    # Alpha101
    "alpha009",
    "alpha012",
    "alpha023",
    "alpha024",
    "alpha041",
    "alpha046",
    "alpha049",
    "alpha051",
    "alpha053",
    "alpha054",
    "alpha101",
    # reference formulas
    "amihud",
    "cvar_historical",
    "ewma_variance",
    "factor_half_life",
    "factor_neutralize",
    "factor_turnover",
    "garman_klass",
    "ic_decay",
    "implementation_shortfall",
    "mad_winsorize",
    "max_drawdown",
    "parkinson",
    "rank_ic",
    "rogers_satchell",
    "roll_spread",
    "sharpe",
    "sortino",
    "tick_imbalance_bars",
    "treynor",
    "twap",
    "var_historical",
]
