"""fxgate.modules: the layer-4 certainty modules (streaming state + numba kernels + pass rule).

Modules register by name; ``create("vpin", quantile=0.95)`` builds one from config. Importing the package imports
every public module file in it (``modules/<name>.py``, sorted by name), and importing a file registers its
module: a new module is one new file. The modules, their formulas and pass rules: README's module table.
"""

import importlib
import pkgutil

from fxgate.modules._base import REGISTRY, CertaintyModule, Context, Matured, ModuleResult, Outcome, create, register

for _m in sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")):
    importlib.import_module(f"{__name__}.{_m}")

__all__ = ["CertaintyModule", "Context", "Matured", "ModuleResult", "Outcome", "REGISTRY", "create", "register"]
