"""Training data from the trader's bars, split by time so that nothing from the future reaches training.

From any number of bar files (:func:`fxgate.engine.load_bars`), :func:`build` writes, per split
(``train``/``val``/``test``):

* ``features.jsonl`` — *feature examples*: a bar's key features (computed by :mod:`fxgate.models.features`, the code
  the gate serves with) and what each one means;
* ``scenarios.jsonl`` — *trade scenarios*: the exact prompt the live judge receives (the ``judge`` template and
  :func:`fxgate.models.prompt.prompt_values`), and as completion a ``<think>`` block built **only from that
  prompt's inputs** followed by the JSON verdict the realized outcome supports: BUY/SELL when the close ``horizon``
  bars later moved by more than the spread that way, NONE when the move did not cover costs;
* ``dpo.jsonl`` — *DPO pairs*: the same prompt; chosen = that verdict; rejected = the opposite trade, or — when the
  right answer is to stay out — the proposed trade, stated with 0.99 certainty (the over-confident wrong answer);
* ``train/formulas.jsonl`` — the formula-knowledge conversations of :mod:`fxgate.training.formulas` (timeless, so
  training only); ``train/imported_sft.jsonl`` / ``imported_dpo.jsonl`` — the trader's own JSONL
  (:mod:`fxgate.training.imports`), when given.

**Certainty targets are honest base rates.** The certainty in a target verdict is the frequency, on the training
split, with which that answer was right given the proposal: a model trained on these targets learns to say what
the data supports (about 0.45 on EURUSD H1), not 0.99. A model can only earn the 0.95 the gate asks for from
evidence that is actually there.

**Time split.** One calendar cut for all files (so a correlated pair cannot carry test-period information into
training): ``train`` < T1 ≤ ``val`` < T2 ≤ ``test``. In every file a training example needs its label window (``i +
horizon``) strictly before the first bar at or after T1; validation and test start ``embargo`` (≥ ``horizon``) bars
after their cut. Features use past bars only. ``manifest.json`` records sources (sha256, bars, date ranges), the
cuts, counts per split, kind and source, and ``serving``: the ``[l4]`` section (modules, parameters) and its hash
that the prompts were built for (:func:`check_served_by` compares it with a serving config).

**The served gate's modules.** The scenarios' gate has the Layer-4 modules of the config the judge will be served
with (``config`` / ``--config gate.toml``; default: the default config's 18), so a prompt's formula catalogue and
module lines are the ones the served judge sees. It runs in full mode: scenarios exist for bars where a
cheapest-mode served gate would have vetoed before asking its judge.

**Layer 1 out of sample, in every split.** With a fitted bundle (``--bundle``, refused if its training labels
reach T1, or if its timeframe or label horizon differ from the data's) the proposal a scenario asks about is Layer
1's candidate direction and the prompt shows its calibrated probabilities. Validation and test scenarios get the
bundle's. Training scenarios get **out-of-fold** ones (:func:`oof_schedule`): the training part of each file is cut
into the bundle's walk-forward blocks (:func:`fxgate.models.ensemble.purged_walk_forward`), and each block is
predicted by a model fitted (:meth:`~fxgate.models.ensemble.TreeEnsemble.fit`, the bundle's label spec and config)
only on bars that end ``embargo`` bars before the block starts — never by a model that saw the label it teaches, so
training prompts look like the out-of-sample ones served live. Training bars before the first block get no
scenario. ``meta.layer1`` names the model of every scenario and the last bar it saw. Without a bundle the proposal
is the direction of the last bar's move, a naive proposal that keeps the prompt format identical to serving.

**The served prompt.** Every scenario keeps the template ``values``; SFT, DPO and the evaluation render them with
:func:`served_prompt` under the live judge's budget (``n_ctx`` minus the thinking and answer budgets, whole sections
dropped least important first), with the served model's tokenizer — or the builder does it when given that
tokenizer.

**Nothing half-written.** Every input is read and checked first (bars, bundle, JSONL with its dates and sizes,
tokenizer); the files are written into a temporary directory that replaces ``out`` in one rename at the end, so a
failure leaves a previous build in ``out`` byte for byte. ``manifest.json`` lists every file with its size and
sha256 (``fxgate train verify`` checks a copy).

Layout: :mod:`~fxgate.training.datasets.spec` (the split specification, the manifest's kind and budget),
:mod:`~fxgate.training.datasets.layer1` (the out-of-fold models), :mod:`~fxgate.training.datasets.scenarios` (the
gate run over one file), :mod:`~fxgate.training.datasets.text` (reasoning, verdicts, feature examples),
:mod:`~fxgate.training.datasets.prompts` (the stored and the served prompt), :mod:`~fxgate.training.datasets.builder`
(the build and its manifest). This package re-exports the API.
"""

from fxgate.training.datasets.builder import build
from fxgate.training.datasets.layer1 import oof_schedule
from fxgate.training.datasets.prompts import served_prompt
from fxgate.training.datasets.spec import (
    DATA_MANIFEST_KIND,
    KINDS,
    SPLITS,
    SplitSpec,
    check_served_by,
    data_budget,
    is_data_manifest,
    prompt_budget_of,
)
from fxgate.training.datasets.text import answer_text, think_text
from fxgate.training.errors import DatasetError, DatasetWarning

__all__ = [
    "build",
    "SplitSpec",
    "DatasetError",
    "DatasetWarning",
    "think_text",
    "answer_text",
    "SPLITS",
    "KINDS",
    "served_prompt",
    "data_budget",
    "check_served_by",
    "prompt_budget_of",
    "oof_schedule",
    "is_data_manifest",
    "DATA_MANIFEST_KIND",
]
