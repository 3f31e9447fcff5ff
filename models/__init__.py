"""fxgate.models: features, labels, the boosted-tree ensemble, the LLM judge and the debate.

The package itself imports and re-exports nothing, so that importing it loads neither llama.cpp nor the three
boosters. Import from the submodules, each of which lists its API in ``__all__``:

* :mod:`fxgate.models.features` — the streaming feature engine (Alpha158, realized volatility, time and cost)
* :mod:`fxgate.models.labels` — next-h and triple-barrier labels
* :mod:`fxgate.models.ensemble` — the Layer-1 boosted-tree ensemble and its bundles
* :mod:`fxgate.models.prompt` — prompt templates, the chat template and the token budget
* :mod:`fxgate.models.llm` — the Layer-2 LLM runtime, verdict cache and judge
* :mod:`fxgate.models.debate` — the Layer-3 bull/bear/risk debate
"""

__all__: list[str] = []
