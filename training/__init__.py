"""fxgate.training: dataset builders, SFT, DPO, merge, GGUF export, evaluation.

These are tracked in the project's issues; this package exports nothing yet.
"""

__all__: list[str] = []
