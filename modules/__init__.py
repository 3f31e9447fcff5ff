"""fxgate.modules: the layer-4 certainty modules (streaming state + numba kernels + pass rule).

Modules register by name; ``create("vpin", quantile=0.95)`` builds one from config. Part 1 (this release): vpin,
bocpd, regime, adverse_selection, execution_cost, robust_kelly, bayesian_sizing, uncertainty, shap.
"""

from fxgate.modules import (  # noqa: F401 - importing registers the modules
    adverse_selection,
    bayesian_sizing,
    bocpd,
    execution_cost,
    regime,
    robust_kelly,
    shap,
    uncertainty,
    vpin,
)
from fxgate.modules._base import REGISTRY, CertaintyModule, Context, ModuleResult, Outcome, create, register

__all__ = ["CertaintyModule", "Context", "ModuleResult", "Outcome", "REGISTRY", "create", "register"]
