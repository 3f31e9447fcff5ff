"""The whole training run: data → SFT → merge → DPO → merge → GGUF F16 + Q8_0 → parity check → Modelfile →
evaluation → manifest → verify.

``fxgate train all --preset nano --out DIR`` runs it on CPU in minutes (the nano model; :mod:`fxgate.training.nano`).
``--preset h100-7b`` is the same sequence for DeepSeek-R1-Distill-Qwen-7B on a GPU box; its SFT and DPO steps can
also be launched on several GPUs with ``accelerate`` (see :mod:`fxgate.training.sft`).

A run is not done until its artefacts are verified: every run directory gets ``manifest.json`` (each file's size
and sha256, the preset, the data manifest, the git commit, the metrics and the parity results), and
``fxgate train verify DIR`` checks a downloaded copy against it — run it on your machine before you destroy a rented
instance.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from fxgate.engine.core.hashing import file_sha256
from fxgate.engine.loader import sample_path
from fxgate.training import _optional, datasets
from fxgate.training.dpo import train_dpo
from fxgate.training.evaluate import evaluate
from fxgate.training.export import export_gguf, load_tokenizer, parity_check
from fxgate.training.nano import EOS, build_nano
from fxgate.training.presets import get_preset
from fxgate.training.sft import sft_examples, train_sft

__all__ = ["merge", "write_modelfile", "write_manifest", "verify", "manifest_kind", "run_all", "MANIFEST"]

MANIFEST = "manifest.json"
# what the manifest records and verify checks; checkpoints and intermediate models are left out
_SKIP_DIRS = ("checkpoint-",)


def merge(base: str | Path, adapter: str | Path, out: str | Path) -> Path:
    """Merge a LoRA adapter into its base model (fp32 on CPU, saved in the base's dtype)."""
    torch, tf = _optional.torch(), _optional.transformers()
    tf.utils.logging.disable_progress_bar()
    model = tf.AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    merged = _optional.peft().PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    out = Path(out)
    merged.save_pretrained(str(out))
    load_tokenizer(base).save_pretrained(str(out))
    return out


def write_modelfile(gguf: str | Path, out: str | Path, *, system: str = "") -> Path:
    """An Ollama Modelfile for an R1-Distill-style GGUF: its chat template as a Go template, the end-of-sentence
    token as the stop, greedy decoding."""
    tpl = (
        "{{- if .System }}{{ .System }}{{ end }}"
        '{{- range .Messages }}{{- if eq .Role "user" }}<｜User｜>{{ .Content }}'
        '{{- else if eq .Role "assistant" }}<｜Assistant｜>{{ .Content }}' + EOS + "{{- end }}{{- end }}"
        "<｜Assistant｜><think>\n"
    )
    text = (
        f"# Ollama Modelfile written by fxgate. `ollama create fxgate-judge -f {Path(out).name}`\n"
        f"FROM ./{Path(gguf).name}\n"
        f'TEMPLATE """{tpl}"""\n'
        + (f'SYSTEM """{system}"""\n' if system else "")
        + f'PARAMETER stop "{EOS}"\nPARAMETER stop "<｜User｜>"\n'
        + "PARAMETER temperature 0\nPARAMETER seed 0\n"
    )
    p = Path(out)
    p.write_text(text)
    return p


def _files(d: Path) -> list[Path]:
    """The run's files, relative to ``d``, without following symlinks (a symlink is an error: a run directory holds
    its own files, and a link out of it would let verify hash something else)."""
    out = []
    for root, dirs, names in os.walk(d, followlinks=False):
        r = Path(root)
        dirs[:] = sorted(x for x in dirs if not x.startswith(_SKIP_DIRS))
        for x in list(dirs) + names:
            if (r / x).is_symlink():
                raise ValueError(
                    f"{r / x}: a symlink in the run directory; a manifest records the run's own files "
                    f"only. Fix: replace it by the file it points to, or remove it"
                )
        for x in names:
            p = r / x
            if p.relative_to(d).parts == (MANIFEST,):
                continue
            if p.is_file():
                out.append(p)
    return sorted(out)


def _git_commit() -> str | None:
    try:
        r = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, cwd=Path(__file__).parent
        )
        return r.stdout.strip() or None if r.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _strict(x: Any) -> Any:
    """``x`` with every non-finite float replaced by None, so the manifest is strict JSON."""
    if isinstance(x, float):
        return x if x == x and abs(x) != float("inf") else None
    if isinstance(x, dict):
        return {k: _strict(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_strict(v) for v in x]
    return x


def write_manifest(d: str | Path, **extra: Any) -> dict[str, Any]:
    """Write ``d/manifest.json`` listing every file of the run (relative POSIX paths, sizes, sha256), written to a
    temporary name and renamed into place."""
    d = Path(d)
    files = {p.relative_to(d).as_posix(): {"bytes": p.stat().st_size, "sha256": file_sha256(p)} for p in _files(d)}
    m = {
        "fxgate_manifest": 1,
        "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "git_commit": _git_commit(),
        **_strict(extra),
        "files": files,
    }
    tmp = d / f".{MANIFEST}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(m, indent=1, default=str, allow_nan=False))
    tmp.replace(d / MANIFEST)
    return m


def verify(d: str | Path) -> list[str]:
    """Problems of a copy of a run directory (or of a ``fxgate train data`` directory) against its manifest:
    missing, short, altered files, and any manifest entry that points outside the directory. Empty = OK.

    Only the directory itself is checked: a path in the manifest must be relative, without ``..``, and must not
    resolve (through a symlink) outside the directory — such an entry is a problem, never followed. A malformed
    manifest is one problem with its reason, never an exception."""
    d = Path(d)
    mp = d / MANIFEST
    if not d.exists():
        return [f"{d}: no such directory — nothing to verify"]
    if not d.is_dir():
        return [f"{d}: not a directory — give the run directory (the one holding {MANIFEST})"]
    if mp.is_symlink():
        return [f"{mp}: a symlink; verify reads the run's own manifest only"]
    if not mp.is_file():
        return [f"{mp}: missing — nothing to verify against"]
    try:
        m = json.loads(mp.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return [f"{mp}: unreadable ({exc}). Fix: copy the manifest again from the run"]
    if not isinstance(m, dict):
        return [f'{mp}: not a manifest (a JSON {type(m).__name__}, expected an object with "files")']
    if datasets.is_data_manifest(m) and "files" not in m:
        return [
            f"{mp}: this is a `fxgate train data` manifest from before file hashes were recorded; verify checks "
            f"runs and data directories that list their files. Fix: rebuild it with `fxgate train data`"
        ]
    if "fxgate_manifest" not in m and not datasets.is_data_manifest(m):
        return [
            f"{mp}: not a manifest written by `fxgate train all` or `fxgate train data` (no fxgate_manifest "
            f"key). Fix: point at the run directory itself"
        ]
    files = m.get("files")
    if not isinstance(files, dict):
        return [
            f'{mp}: "files" is missing or not an object of path -> {{bytes, sha256}}. Fix: copy the manifest '
            f"again from the run"
        ]
    root = d.resolve()
    out = []
    if not datasets.is_data_manifest(m) and not any(isinstance(k, str) and k.endswith(".gguf") for k in files):
        out.append(
            f"{mp}: lists no .gguf file, so a copy that verifies would still hold no model. Fix: copy the "
            "manifest written by `fxgate train all` at the end of the run"
        )
    if datasets.is_data_manifest(m) and not files:
        out.append(f"{mp}: lists no file. Fix: rebuild the data directory with `fxgate train data`")
    for rel, info in files.items():
        if not isinstance(rel, str) or not rel:
            out.append(f'{mp}: an empty file name in "files"')
            continue
        pr = PurePosixPath(rel)
        if pr.is_absolute() or Path(rel).is_absolute() or "\\" in rel or ".." in pr.parts:
            out.append(f"{rel}: not a path inside the run directory (absolute or with '..'); not followed")
            continue
        if not (isinstance(info, dict) and isinstance(info.get("bytes"), int) and isinstance(info.get("sha256"), str)):
            out.append(f"{rel}: malformed manifest entry (needs bytes and sha256)")
            continue
        p = d / rel
        if any((d / Path(*pr.parts[: k + 1])).is_symlink() for k in range(len(pr.parts))):
            try:
                inside = p.resolve().is_relative_to(root)
            except (OSError, RuntimeError):
                inside = False
            out.append(
                f"{rel}: a symlink{'' if inside else ' pointing outside the run directory'}; verify checks "
                f"the run's own files only (not followed)"
            )
            continue
        if not p.is_file():
            out.append(f"{rel}: missing")
        elif p.stat().st_size != info["bytes"]:
            out.append(f"{rel}: {p.stat().st_size} bytes, expected {info['bytes']} (truncated or altered)")
        elif file_sha256(p) != info["sha256"]:
            out.append(f"{rel}: sha256 differs from the manifest (altered)")
    return out


def manifest_kind(d: str | Path) -> str:
    """``"run"``, ``"data"`` or ``"unknown"``: what the manifest in ``d`` describes (for the CLI's message)."""
    try:
        m = json.loads((Path(d) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return "unknown"
    if datasets.is_data_manifest(m):
        return "data"
    return "run" if isinstance(m, dict) and "fxgate_manifest" in m else "unknown"


def run_all(
    preset_name: str,
    out: str | Path,
    *,
    bars: list[str] | None = None,
    base: str | None = None,
    log: Callable[[str], None] = print,
    eval_limit: int | None = None,
) -> dict[str, Any]:
    """The whole pipeline into ``out`` (see the module docstring); returns the manifest."""
    p = get_preset(preset_name)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}

    def step(name: str) -> Callable[[], None]:
        log(f"[{time.perf_counter() - t0:6.0f} s] {name}")
        s = time.perf_counter()
        return lambda: timings.__setitem__(name, round(time.perf_counter() - s, 1))

    done = step("data: fxgate train data (time split, manifest)")
    files = bars or [str(sample_path())]
    dm = datasets.build(
        files,
        out / "data",
        datasets.SplitSpec(horizon=1, spread=0.00008),
        load_kwargs={"symbol": "EURUSD"} if not bars else None,
    )
    done()
    if p.base == "nano" and base is None:
        done = step("base: the nano model (random 2-layer Qwen2 + its BPE tokenizer)")
        build_nano(out / "base", seed=p.seed)
        base_dir: str = str(out / "base" / "hf")
        done()
    else:
        base_dir = base or p.base
    done = step(f"SFT: LoRA r={p.lora_r} on all linear layers, {p.sft_epochs} epochs, lr {p.sft_lr}")
    sft = train_sft(base_dir, out / "data", out / "sft", p, resume=True)
    done()
    done = step("merge the SFT adapter")
    merge(base_dir, out / "sft" / "adapter", out / "sft-merged")
    done()
    done = step(f"DPO: beta {p.beta}, {p.dpo_epochs} epoch(s), from the SFT model")
    dpo = train_dpo(out / "sft-merged", out / "data", out / "dpo", p, resume=True)
    done()
    done = step("merge the DPO adapter")
    final = merge(out / "sft-merged", out / "dpo" / "adapter", out / "model")
    done()
    done = step("export GGUF F16 and Q8_0")
    f16 = export_gguf(final, out / "model-f16.gguf", "f16", name=f"fxgate-{p.name}")
    q8 = export_gguf(final, out / "model-q8_0.gguf", "q8_0", name=f"fxgate-{p.name}")
    done()
    done = step("parity check: llama.cpp vs the merged torch model (tokens, F16 logits, Q8_0 next token)")
    tok = load_tokenizer(final)
    # >= 200 distinct validation prompts (scenarios as served, and feature examples), spread over the split
    val = list(dict.fromkeys(e["prompt"] + e["completion"] for e in sft_examples(out / "data", tok, split="val")))
    prompts = [val[i] for i in sorted(set(np.linspace(0, len(val) - 1, min(len(val), 240)).astype(int)))]
    parity = parity_check(final, f16, q8, prompts, n_logit_prompts=32, min_prompts=200)  # raises ParityError
    (out / "parity.json").write_text(json.dumps(parity, indent=1))
    done()
    write_modelfile(q8, out / "Modelfile")
    done = step("evaluation on the test split (accuracy, precision with Wilson CI, coverage, ECE, baselines)")
    ev = evaluate(
        q8,
        out / "data",
        limit=eval_limit if eval_limit is not None else p.eval_examples,
        think_budget=384,
        n_gpu_layers=-1 if _optional.torch().cuda.is_available() else 0,
    )
    (out / "eval.json").write_text(json.dumps(ev, indent=1))
    done()
    # the intermediate model is not a deliverable; the manifest covers what a user downloads
    shutil.rmtree(out / "sft-merged", ignore_errors=True)
    m = write_manifest(
        out,
        preset=p.to_dict(),
        base=base_dir,
        data_manifest=dm,
        metrics={"sft": sft, "dpo": dpo},
        parity=parity,
        evaluation={k: ev[k] for k in ("model_scores", "baselines", "outcomes")},
        timings_s=timings,
        python=sys.version.split()[0],
    )
    problems = verify(out)
    if problems:
        raise RuntimeError("the run's own files do not match its manifest: " + "; ".join(problems))
    log(f"[{time.perf_counter() - t0:6.0f} s] done: {out / MANIFEST} ({len(m['files'])} files verified)")
    return m
