"""fxgate.training: the model side of fxgate — everything that turns the trader's bars into a served LLM judge.

Submodules (import them directly; this package re-exports nothing, so importing it stays cheap and needs no
training extra):

* :mod:`~fxgate.training.datasets` — leak-proof time-split SFT/DPO/test data from bar files (``fxgate train data``);
* :mod:`~fxgate.training.imports` — the trader's own JSONL (Alpaca, chat, TRL preference), checked and de-duplicated;
* :mod:`~fxgate.training.formulas` — the formula catalogue and its SFT samples (``fxgate train formulas``);
* :mod:`~fxgate.training.sft`, :mod:`~fxgate.training.dpo` — LoRA SFT and DPO (TRL + PEFT), resumable;
* :mod:`~fxgate.training.export` — GGUF F16/Q8_0 export and the parity check against the torch model;
* :mod:`~fxgate.training.evaluate` — the test-split evaluation against baselines (``fxgate train eval``);
* :mod:`~fxgate.training.pipeline` — the whole run, its manifest and ``fxgate train verify``;
* :mod:`~fxgate.training.nano`, :mod:`~fxgate.training.presets` — the nano model and the training presets;
* :mod:`~fxgate.training.errors` — :class:`DatasetError` and :class:`DatasetWarning`.

The ``train`` extra's libraries (torch, transformers, peft, trl, datasets, gguf, tokenizers) are imported in one
place, ``training/_optional.py``, on first use: ``fxgate train data``, ``formulas``, ``eval`` and ``verify`` run
without them.
"""

__all__: list[str] = []
