"""SHAP — which features drive the Layer-1 models on this bar, by TreeSHAP (Lundberg et al. 2020, *From local
explanations to global understanding with explainable AI for trees*, Nat. Mach. Intell. 2).

Attributions come from fxgate's exact TreeSHAP on the compiled trees (``fxgate.models._treeshap``: each library's
own TreeSHAP values, without calling it), through the Layer-1 ensemble the gate puts in the Context
(``ctx.ensemble.explain(features)``: one explanation per model, on the winsorized row the models saw; this module
knows no booster library). Additivity is checked on every call: attributions + base value = the row's leaves
summed (float64), to 1e-9 relative; a violation fails the module.

Attributions are computed in :meth:`verdict`, i.e. only on bars the gate asks about (the gate evaluates layers
cheapest first): about 1.5 ms for the three 300-tree models (``benchmarks/bench_shap.py``; the libraries' own take
about 10 ms). Pass rule: in no model does a single feature carry
more than ``max_share`` (0.5) of the total |attribution|, and none of the ``blacklist`` features (default: the
calendar features) is any model's top contributor. The reason names the top contributors.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fxgate.modules._base import CertaintyModule, Context, ModuleResult, insufficient, register


@register("shap")
class Shap(CertaintyModule):
    title = "SHAP"
    formula = "phi_i = Shapley values of the tree model"
    citation = "Lundberg et al. (2020), Nat. Mach. Intell. 2"
    rule = "no feature carries > `max_share` (0.5) of any model's |attribution|; no `blacklist` feature on top"
    cost = "scheduled"
    explains = True
    #: TreeSHAP of three 300-tree models on one row costs about 1.5 ms, ten times a bar's other work, so a
    #: replay's trace evaluates it alone on one accepted bar in 10 (a fixed sample: every 10th bar)
    trace_every = 10
    defaults = {"max_share": 0.5, "blacklist": ("TOD_SIN", "TOD_COS", "DOW"), "top": 3}
    state_keys = ()

    def reset(self) -> None:
        self._row: np.ndarray | None = None
        self._ensemble: Any = None

    def update(self, ctx: Context) -> None:
        self._row = None if ctx.features is None else np.asarray(ctx.features, dtype=np.float64)
        self._ensemble = ctx.ensemble

    def verdict(self) -> ModuleResult:
        thr = float(self.params["max_share"])
        if self._row is None or self._ensemble is None or not self._ensemble.fitted:
            return insufficient(self.name, 0, 1, thr, "bars with a fitted Layer-1 model")
        names = self._ensemble.feature_names
        worst_share, reasons, bad = 0.0, [], []
        for e in self._ensemble.explain(self._row):
            model, phi = e.model, e.phi
            if not abs(phi.sum() + e.base - e.margin) <= e.tolerance * max(1.0, abs(e.margin)):
                return self._result(
                    math.nan,
                    False,
                    thr,
                    f"{model}: SHAP values do not add up to the margin ({phi.sum() + e.base:.6f} vs {e.margin:.6f})",
                )
            mag = np.abs(phi)
            total = mag.sum()
            share = float(mag.max() / total) if total > 0 else 0.0
            worst_share = max(worst_share, share)
            order = np.argsort(-mag)[: int(self.params["top"])]
            reasons.append(f"{model}: " + ", ".join(f"{names[i]} {phi[i]:+.3f}" for i in order))
            if share > thr:
                bad.append(f"{model}'s {names[order[0]]} carries {share:.0%} of |attribution|")
            if names[order[0]] in self.params["blacklist"]:
                bad.append(f"{model}'s top contributor is blacklisted {names[order[0]]}")
        ok = not bad
        head = "; ".join(bad) + " — " if bad else ""
        return self._result(worst_share, ok, thr, head + "top contributors " + "; ".join(reasons))

    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name, "params": dict(self.params)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.reset()
