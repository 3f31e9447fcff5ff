"""fxgate.modules: the layer-4 certainty modules (streaming state + numba kernels + pass rule).

The module framework and the 18 modules are tracked in the project's issues; this package exports nothing yet.
"""

__all__: list[str] = []
