"""PrecisionMonitor — is the gate's live precision still at the certified target? Halts signals when it is not.

``fxgate calibrate`` certifies thresholds for a target precision on a calibration block (engine/calibrate.py). FX
bars are not exchangeable, so the certificate can go stale. This module tests, as the gate's own signals mature,
H0: live precision >= ``[certify] target`` with a betting e-process (:class:`fxgate.engine.core.certify.
PrecisionMonitor`: K_t = prod (1 + λ_t (target - X_t)), X_t = 1 when signal t's P&L after the full entry spread is
positive, λ_t predictable; Waudby-Smith & Ramdas 2023; Ville's inequality gives P(sup K_t >= 1/alpha) <= alpha under
H0, at every time). It counts only the bars the gate *emitted* a signal on (``Matured.emitted``), and with
``horizon`` > 1 only signals whose holding periods do not overlap the last counted one (overlapping trades share
price moves: they are not independent bets).

Pass rule: the e-value is below 1 / ``[certify] monitor_alpha``. Once it reaches it the module fails on every bar
("halted: live precision below ..."): no more signals until the thresholds are certified again (``fxgate calibrate``
on recent bars; a new certificate is a new config, so a fresh monitor). A halted gate sees no new signals, so it
stays halted: that is the point. It only runs in a certified config (``fxgate calibrate`` lists it; a config that
lists it without a certificate is refused).

State: ``ist`` (slots ``I_*``: signals counted, correct, halted, halted at, entry bar of the last counted signal) and
``fs`` (``F_*``: the e-process's log wealth, its bet's running mean and variance).
"""

from __future__ import annotations

import math

import numpy as np

from fxgate.engine.core.certify import PrecisionMonitor as _EProcess
from fxgate.modules._base import CertaintyModule, Context, ModuleResult, register

#: ``ist`` slots
I_N, I_CORRECT, I_REJECTED, I_REJECTED_AT, I_LAST_ENTRY = range(5)
#: ``fs`` slots
F_LOG_E, F_MU, F_VAR = range(3)
_NEVER = -(10**9)


@register("precision_monitor")
class PrecisionMonitorModule(CertaintyModule):
    title = "PrecisionMonitor"
    formula = "K_t = prod (1 + lambda_t (target - X_t)); halt when K_t >= 1/alpha"
    citation = "Waudby-Smith & Ramdas (2023), JRSS-B 86(1); Ville (1939)"
    rule = "e-value of H0 'live precision >= [certify] target' < 1 / [certify] monitor_alpha (else halted)"
    defaults = {"half_life": 100.0, "horizon": 1, "certify_target": 0.0, "certify_alpha": 0.05}
    gate_settings = ("horizon", "certify_target", "certify_alpha")
    #: the live record's halt is the gate's, not evidence about the bar: no prompt shows it (a cheapest-mode gate
    #: asks its judge only after it passed), so a certified config serves the prompts of the uncertified one
    in_prompt = False
    state_keys = ("ist", "fs")

    def reset(self) -> None:
        p = self.params
        target = float(p["certify_target"])
        # without a certified target there is nothing to monitor: the verdict fails closed (a gate config that
        # lists the module without a certificate is refused before this: engine/config.py)
        self.monitor = _EProcess(target, float(p["certify_alpha"]), half_life=float(p["half_life"])) if target else None
        self.last_entry = _NEVER

    # the e-process's state as the two named-slot arrays every module keeps (snapshots, the slot test)
    @property
    def ist(self) -> np.ndarray:
        m = self.monitor
        if m is None:
            return np.array([0, 0, 0, -1, self.last_entry], dtype=np.int64)
        at = -1 if m.rejected_at is None else m.rejected_at
        return np.array([m.n, m.n_correct, int(m.rejected), at, self.last_entry], dtype=np.int64)

    @ist.setter
    def ist(self, v: np.ndarray) -> None:
        self._ist = np.asarray(v, dtype=np.int64).copy()
        self._load()

    @property
    def fs(self) -> np.ndarray:
        m = self.monitor
        d = m.state_dict() if m is not None else {"log_e_value": 0.0, "mu": 0.0, "var": 0.0}
        return np.array([d["log_e_value"], d["mu"], d["var"]], dtype=np.float64)

    @fs.setter
    def fs(self, v: np.ndarray) -> None:
        self._fs = np.asarray(v, dtype=np.float64).copy()
        self._load()

    def _load(self) -> None:
        ist, fs = getattr(self, "_ist", None), getattr(self, "_fs", None)
        if ist is None or fs is None:  # load_state_dict sets ist, then fs: load once both are there
            return
        self.last_entry = int(ist[I_LAST_ENTRY])
        if self.monitor is not None:
            m = self.monitor
            self.monitor.load_state_dict(
                {
                    "target": m.target,
                    "alpha": m.alpha,
                    "half_life": m.half_life,
                    "n": int(ist[I_N]),
                    "n_correct": int(ist[I_CORRECT]),
                    "rejected": int(ist[I_REJECTED]),
                    "rejected_at": int(ist[I_REJECTED_AT]),
                    "log_e_value": float(fs[F_LOG_E]),
                    "mu": float(fs[F_MU]),
                    "var": float(fs[F_VAR]),
                }
            )
        del self._ist, self._fs

    def update(self, ctx: Context) -> None:
        if self.monitor is None:
            return
        h = int(self.params["horizon"])
        for m in ctx.matured:
            if not m.emitted or m.entry_bar < self.last_entry + h:
                continue
            spread = m.spread if math.isfinite(m.spread) else 0.0
            pnl = m.emitted * (m.exit_price - m.entry_price) - spread
            self.last_entry = m.entry_bar
            self.monitor.update(pnl > 0)

    def verdict(self) -> ModuleResult:
        mon = self.monitor
        if mon is None:
            return self._result(
                math.nan, False, math.nan, "no certified target ([certify] target = 0): run fxgate calibrate"
            )
        thr = 1.0 / mon.alpha
        why = mon.reason()
        return self._result(mon.e_value, not mon.rejected, thr, ("halted: " if mon.rejected else "") + why)
