"""fxgate.models: features, labels, the boosted-tree ensemble, the LLM judge and the debate.

These are tracked in the project's issues; this package exports nothing yet.
"""

__all__: list[str] = []
