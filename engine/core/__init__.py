"""fxgate's foundation: what every other package builds on, importing nothing of fxgate above it.

* :mod:`~fxgate.engine.core.bars` — ``Bar``/``Bars`` and timeframes
* :mod:`~fxgate.engine.core.errors` — ``FxgateError``, ``BarDataError``, ``Problem``
* :mod:`~fxgate.engine.core.config` — the frozen ``GateConfig`` types and the TOML reader
* :mod:`~fxgate.engine.core.decision` — ``Decision``/``LayerVerdict`` and their JSON Schema
* :mod:`~fxgate.engine.core.records` — the typed records layers hand each other; the candidate rule
* :mod:`~fxgate.engine.core.validate` — the bar rules, once: ``bar_fault`` for the gate, row masks for the loader
* :mod:`~fxgate.engine.core.jit` — the one place numba flags are set
* :mod:`~fxgate.engine.core.hashing`, :mod:`~fxgate.engine.core.atomic` — file hashes; whole-or-nothing writes
* :mod:`~fxgate.engine.core.version` — ``__version__``

The import rules (tests/package/test_layering.py): this package imports only the standard library and third-party
code; ``modules`` and ``models`` import it and nothing else of fxgate; the orchestration imports everything.
"""
