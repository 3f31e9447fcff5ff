"""The fused per-bar step's contract, module side: what a module declares so the gate can run its streaming update
inside one compiled call per bar (``fxgate.engine.fused`` generates that call from the configured module list).

A module that can be fused returns a :class:`FusedStep` from ``CertaintyModule.fused_step(timeframe)``: a compiled
kernel, the state arrays it updates (attribute paths on the module, in the kernel's argument order), the per-bar
inputs it reads (names from :data:`INPUTS`, in order) and its parameters (Python scalars, fixed for the gate's
life). The generated step calls every fused module's kernel as::

    kernel(*state arrays, *inputs, *params)

in configured order. Its result must equal what the module's ``update(ctx)`` does with the same bar's
:class:`~fxgate.modules.Context` — ``update`` stays the reference (the twin), and the gate runs it instead for a
module that returns None and for every module of a gate built with ``fused=False``. ``tests/engine/test_fused.py``
checks the two give bit-identical decisions and state on the sample (every bar's decision; the state on
every 3rd bar of the first 2,600 and every 25th after).

Fused kernels (and the kernels they call) are compiled with ``fastmath=False``. With reassociation or contraction
allowed, LLVM may reorder a sum or form an FMA differently once a kernel is inlined into the step with its
parameters as constants, and the fused path's last bits would then differ from ``update``'s (seen on VPIN's bucket
imbalances before this rule).

Kernels follow Python's error model (numba's default): a float division by zero raises ZeroDivisionError, and the
gate refuses that bar with its state rolled back. A twin dividing numpy scalars would get inf instead, so a module
validates its parameters so that neither can divide by zero (BOCPD's ``calib_bars >= 2``, found by review).

A module whose update needs a Python call before its arithmetic (a model prediction the kernel cannot make: the
quantile forests of the Layer-1 bundle) declares ``prepare``: the gate calls ``prepare(ctx)`` before the step on
every bar, and it writes what the kernel needs into the module's own arrays (listed in ``state``). It must not
change anything ``update`` would not.

A kernel that needs Python after it (a periodic refit, a cache to drop) returns a nonzero int and declares
``after``: the gate calls ``after(flag)`` with it, after the step, on that bar only. A kernel without ``after``
returns nothing.

Per-bar inputs (computed once per bar by the gate; a module reads only those it names):

======================  ========================================================================================
``close`` ``volume``     the validated bar's close and volume (float64)
``high`` ``low``         its high and low
``spread``               the spread the bar trades at (``Context.spread``; NaN: unknown)
``direction``            the candidate direction, int64: +1, -1, 0
``size``                 ``Context.size`` (float64)
``in_sample``            int64 1 when the bar is inside the Layer-1 bundle's training window
``bar_index``            ``Context.bar_index`` (int64)
``has_probs``            int64 1 when Layer 1 gave probabilities on this bar
``probs``                float64[n_models]: ``Context.probs`` (zeros when ``has_probs`` is 0)
``has_x``                int64 1 when the bar has a feature row
``x``                    float64[n_features]: ``Context.features`` (zeros when ``has_x`` is 0)
``n_out`` ``out``        the outcomes due on this bar: ``out[:n_out]``, float64 rows of the ``O_*`` columns
``n_mat`` ``mat``        the forecasts matured on this bar: ``mat[:n_mat]``, float64 rows of the ``M_*`` columns
``mprobs``               float64[rows, n_models]: ``mprobs[i]`` is matured row i's probabilities when
                         ``mat[i, M_HAS_PROBS]`` is 1
======================  ========================================================================================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["FusedStep", "INPUTS"]

#: the per-bar inputs a fused kernel may read, in the order the generated step receives them
INPUTS = (
    "close",
    "volume",
    "high",
    "low",
    "spread",
    "direction",
    "size",
    "in_sample",
    "bar_index",
    "has_probs",
    "probs",
    "has_x",
    "x",
    "n_out",
    "out",
    "n_mat",
    "mat",
    "mprobs",
)

#: columns of ``out`` (one :class:`~fxgate.modules.Outcome` per row)
O_DIRECTION, O_ENTRY, O_EXIT, O_SPREAD, O_PROB = range(5)
O_COLUMNS = 5
#: columns of ``mat`` (one :class:`~fxgate.modules.Matured` per row)
M_ENTRY_BAR, M_ENTRY, M_EXIT, M_DIRECTION, M_SPREAD, M_LLM_PROB, M_EMITTED, M_HAS_PROBS = range(8)
M_COLUMNS = 8


@dataclass(frozen=True, slots=True)
class FusedStep:
    """One module's part of the fused step (see the module docstring)."""

    kernel: Any  # a numba dispatcher bound to a module-level name
    state: tuple[str, ...]  # attribute paths of the state arrays, in argument order ("ist", "win.pnl")
    inputs: tuple[str, ...]  # names from INPUTS, in argument order
    params: tuple[int | float | bool, ...] = ()
    after: Callable[[int], None] | None = None
    prepare: Callable[[Any], None] | None = None  # called with the bar's Context before the step

    def __post_init__(self) -> None:
        unknown = [n for n in self.inputs if n not in INPUTS]
        if unknown:
            raise ValueError(f"fused step reads unknown inputs {unknown}; the inputs: {', '.join(INPUTS)}")
        bad = [p for p in self.params if type(p) not in (int, float, bool)]
        if bad:
            raise TypeError(f"fused step parameters must be Python int, float or bool, got {bad!r}")
