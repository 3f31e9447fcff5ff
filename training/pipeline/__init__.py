"""The whole training run: data → SFT → merge → DPO → merge → GGUF F16 + Q8_0 → parity check → Modelfile →
evaluation → manifest → verify.

``fxgate train all --preset nano --out DIR`` runs it on CPU in minutes (the nano model; :mod:`fxgate.training.nano`).
``--preset h100-7b`` is the same sequence for DeepSeek-R1-Distill-Qwen-7B on a GPU box; its SFT and DPO steps can
also be launched on several GPUs with ``accelerate`` (see :mod:`fxgate.training.sft`).

A run is not done until its artefacts are verified: every run directory gets ``manifest.json`` (each file's size
and sha256, the preset, the data manifest, the git commit, the metrics and the parity results), and
``fxgate train verify DIR`` checks a downloaded copy against it — run it on your machine before you destroy a rented
instance.

Layout: :mod:`~fxgate.training.pipeline.run` (:func:`run_all`), :mod:`~fxgate.training.pipeline.artefacts` (merge,
Modelfile), :mod:`~fxgate.training.pipeline.manifest` (the manifest and ``verify``). This package re-exports them.
"""

from fxgate.training.pipeline.artefacts import merge, write_modelfile
from fxgate.training.pipeline.manifest import MANIFEST, manifest_kind, verify, write_manifest
from fxgate.training.pipeline.run import run_all

__all__ = ["merge", "write_modelfile", "write_manifest", "verify", "manifest_kind", "run_all", "MANIFEST"]
