"""The build itself: every input read and checked first, the scenarios of every file under one calendar cut, the
files written into a temporary directory that replaces ``out`` in one rename, and ``manifest.json`` listing every
file with its size and sha256 (``fxgate train verify`` checks a copy)."""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fxgate.engine.config import GateConfig, check_modules
from fxgate.engine.core.hashing import file_sha256
from fxgate.engine.core.version import __version__
from fxgate.engine.loader import load_bars
from fxgate.models.ensemble import TreeEnsemble
from fxgate.models.features import FEATURE_ENGINE_VERSION
from fxgate.models.prompt import PromptTemplate, load_template
from fxgate.training.datasets.layer1 import L1Model, oof_schedule
from fxgate.training.datasets.prompts import ServedTokenizer, load_served_tokenizer, prompt_messages, served_prompt
from fxgate.training.datasets.scenarios import Row, rows_for, scenario_config
from fxgate.training.datasets.spec import (
    DATA_MANIFEST_KIND,
    KINDS,
    SPLITS,
    SplitSpec,
    is_data_manifest,
    prompt_budget_of,
    read_json,
    serving_record,
)
from fxgate.training.datasets.text import certainty_table, completion, feature_example, rejected
from fxgate.training.errors import DatasetError, DatasetWarning
from fxgate.training.formulas import sft_samples
from fxgate.training.imports import read_jsonl, write_imported

__all__ = ["build"]


def build(
    bar_files: Sequence[str | Path],
    out: str | Path,
    spec: SplitSpec,
    *,
    bundle: str | Path | None = None,
    jsonl: Sequence[str | Path] = (),
    skip_bad: bool = False,
    load_kwargs: dict[str, Any] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    tokenizer: str | Path | None = None,
    log: Callable[[str], None] | None = None,
    config: GateConfig | None = None,
    config_source: str | None = None,
) -> dict[str, Any]:
    """Write the three splits and ``manifest.json`` into ``out``; return the manifest. ``progress(file, bars done,
    bars in the file)`` is called as bars are processed.

    Every input (bar files, bundle, JSONL, tokenizer) is read and checked before anything is written; the files are
    written into a temporary directory beside ``out`` that replaces ``out`` at the end, so a failed build leaves
    ``out`` exactly as it was. With ``tokenizer`` (the served model's GGUF or HF directory), each prompt is
    stored as the live judge would send it under ``spec``'s serving budget (sections dropped, least important
    first); without, every section is stored and SFT, DPO and ``fxgate train eval`` apply that budget with the
    model's own tokenizer (every scenario carries its template ``values`` for that).

    ``config``: the gate config the judge will be served with (``fxgate train data --config gate.toml``; None: the
    default ``GateConfig()``). The prompts show its Layer-4 modules (``[l4]``: the formula catalogue and a line per
    module, with its parameters) and use its ``[l2] template``; its ``horizon`` and serving budget (``[llm] n_ctx``,
    ``[l2] think_budget``, ``answer_budget``) must be ``spec``'s. The manifest's ``serving`` records its ``[l4]``
    section and hash (:func:`~fxgate.training.datasets.spec.l4_hash`); ``config_source`` names where it came from."""
    say = log or (lambda _msg: None)
    serving = config if config is not None else GateConfig()
    if config is not None:
        _check_serving(serving, spec, config_source or "config")
    if not bar_files:
        raise DatasetError("no bar files given. Fix: --bars FILE (repeat for several pairs)")
    out = Path(out).absolute()
    if Path.cwd().resolve().is_relative_to(out.resolve()):
        raise DatasetError(
            f"--out {out}: the current directory or one above it; the build replaces --out whole. "
            f"Fix: a new directory, e.g. --out data/"
        )
    _check_out(out)
    tpl = load_template(serving.l2.template)  # the template the served judge renders
    # -- read and check every input before any work ------------------------------------------------------------
    loaded = []
    seen: dict[str, Path] = {}
    for f in bar_files:
        p = Path(f)
        bars = load_bars(p, **(load_kwargs or {}))
        if len(bars) < 500:
            raise DatasetError(f"{p}: {len(bars)} bars; a time split with an embargo needs at least 500")
        sha = file_sha256(p)
        if sha in seen:
            raise DatasetError(
                f"{p}: the same bars as {seen[sha]} (sha256 {sha[:12]}…); each bar would be a "
                f"training example twice. Fix: give each file once"
            )
        seen[sha] = p
        loaded.append((p, bars, sha))
    ens = None
    if bundle is not None:
        ens = TreeEnsemble.load(bundle)
        for p, bars, _ in loaded:
            if ens.timeframe and bars.timeframe != ens.timeframe:
                raise DatasetError(
                    f"{bundle}: the bundle was fitted on {ens.timeframe} bars, {p} has "
                    f"{bars.timeframe} bars. Fix: a bundle fitted on {bars.timeframe} bars"
                )
        if ens.label_spec.horizon != spec.horizon:
            raise DatasetError(
                f"{bundle}: the bundle predicts {ens.label_spec.horizon} bar(s) ahead, the scenarios "
                f"ask about {spec.horizon}. Fix: --horizon {ens.label_spec.horizon}, or a bundle "
                f"fitted with horizon {spec.horizon}"
            )
    # one calendar cut for every file
    all_ts = np.sort(np.concatenate([np.asarray(b.ts, dtype=np.int64) for _, b, _ in loaded]))
    t1 = int(all_ts[int(len(all_ts) * (1 - spec.val_frac - spec.test_frac))])
    t2 = int(all_ts[int(len(all_ts) * (1 - spec.test_frac))])
    if ens is not None:
        last = int(ens.manifest["training_window"]["last_label_end_ts"])
        if last >= t1:
            raise DatasetError(
                f"{bundle}: the bundle's training labels reach {np.datetime64(last, 'ns')}, past the "
                f"validation cut {np.datetime64(t1, 'ns')}: its probabilities would leak the future "
                f"into training. Fix: fit the bundle on bars before the cut"
            )
    imported = read_jsonl(jsonl, skip_bad=skip_bad, cut_ns=t1) if jsonl else None
    tok = load_served_tokenizer(tokenizer) if tokenizer is not None else None
    budget = prompt_budget_of(spec)
    # -- the scenarios -----------------------------------------------------------------------------------------
    rows_by_split: dict[str, list[Row]] = {s: [] for s in SPLITS}
    sources = []
    h, g = spec.horizon, spec.gap
    for k, (p, bars, sha) in enumerate(loaded):
        ts = np.asarray(bars.ts, dtype=np.int64)
        a, b = int(np.searchsorted(ts, t1)), int(np.searchsorted(ts, t2))

        def tick(done: int, name: str = p.name, total: int = len(bars)) -> None:
            if progress:
                progress(name, done, total)

        models: list[L1Model] = []
        if ens is not None:
            embargo = max(g, int(ens.manifest.get("embargo") or 0), ens.label_spec.horizon)
            models = oof_schedule(bars, a, ens, embargo, say) if a > 0 else []
            models.append(
                L1Model(a, ens, {"model": "bundle", "bundle_hash": ens.bundle_hash[:16], "fit_last_ts": last})
            )
        rows = rows_for(bars, k, spec, models, ens is not None, tick, serving)
        counts = {}
        for split, lo, hi in (("train", 0, a), ("val", a + g, b), ("test", b + g, len(bars))):
            keep = [r for r in rows if lo <= r.i and r.i + h < hi]
            rows_by_split[split] += keep
            counts[split] = {
                "examples": len(keep),
                "first": str(np.datetime64(keep[0].ts, "ns"))[:19] if keep else None,
                "last": str(np.datetime64(keep[-1].ts, "ns"))[:19] if keep else None,
            }
        sources.append(
            {
                "file": str(p),
                "sha256": sha,
                "symbol": bars.symbol,
                "timeframe": bars.timeframe,
                "bars": len(bars),
                "first": str(bars.times[0])[:19],
                "last": str(bars.times[-1])[:19],
                "splits": counts,
                "layer1_oof": [m.info for m in models if m.ens is not ens],
            }
        )
    if not rows_by_split["train"]:
        raise DatasetError(
            "no training example: the files are too short for the split. Fix: more bars or smaller val/test fractions"
        )
    cert = certainty_table(rows_by_split["train"])
    # -- write into a temporary directory, then swap it into place ---------------------------------------------
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        table = _write_splits(tmp, rows_by_split, loaded, tpl, cert, tok, budget)
        formula_samples = sft_samples()
        with (tmp / "train" / "formulas.jsonl").open("w") as fh:
            for s in formula_samples:
                fh.write(json.dumps(s) + "\n")
        table["train"]["formulas"] = len(formula_samples)
        imp_table = None
        if imported is not None:
            imp_table = write_imported(imported, tmp / "train")
            for kind, n in imp_table["written"].items():
                table["train"][f"imported_{kind}"] = n
        warnings_ = list(imported.warnings) if imported is not None else []
        for w in warnings_[:20]:
            _warn(w)
        manifest = {
            "kind": DATA_MANIFEST_KIND,
            "fxgate_version": __version__,
            "feature_engine_version": FEATURE_ENGINE_VERSION,
            "template": {"id": tpl.id, "sha256": tpl.sha256},
            "serving": serving_record(serving, config_source),
            "horizon": spec.horizon,
            "embargo_bars": spec.gap,
            "spread_default": spec.spread,
            "cuts": {
                "val_from": str(np.datetime64(t1, "ns"))[:19],
                "test_from": str(np.datetime64(t2, "ns"))[:19],
                "val_from_ns": t1,
                "test_from_ns": t2,
            },
            "prompt_budget": {
                "n_ctx": spec.n_ctx,
                "think_budget": spec.think_budget,
                "answer_budget": spec.answer_budget,
                "prompt_tokens_max": budget,
                "applied_with": None if tok is None else {"tokenizer": str(tokenizer), "sha256": tok.sha256},
            },
            "bundle": None
            if ens is None
            else {
                "path": str(bundle),
                "sha256": ens.bundle_hash,
                "training_split": "out-of-fold refits (sources[].layer1_oof)",
            },
            "certainty_targets": cert,
            "sources": sources,
            "counts": table,
            "imported": imp_table,
            "warnings": warnings_,
        }
        manifest["files"] = {
            str(q.relative_to(tmp)): {"bytes": q.stat().st_size, "sha256": file_sha256(q)}
            for q in sorted(tmp.rglob("*"))
            if q.is_file()
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, allow_nan=False))
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _check_serving(cfg: GateConfig, spec: SplitSpec, where: str) -> None:
    """The serving config and the split specification must describe the same judge (its prompt shows the horizon;
    the budget decides which sections it drops)."""
    for key, served, ours, field in (
        ("horizon", cfg.horizon, spec.horizon, "horizon"),
        ("[llm] n_ctx", cfg.llm.n_ctx, spec.n_ctx, "n_ctx"),
        ("[l2] think_budget", cfg.l2.think_budget, spec.think_budget, "think_budget"),
        ("[l2] answer_budget", cfg.l2.answer_budget, spec.answer_budget, "answer_budget"),
    ):
        if served != ours:
            cli = " (leave out --horizon)" if field == "horizon" else ""
            raise DatasetError(
                f"{where}: {key} = {served}, but the data is asked for {ours}; the judge would be served prompts "
                f"for {key} = {served}. Fix: SplitSpec({field}={served}) (`fxgate train data --config` takes it "
                f"from the config{cli}), or serve a config with {key} = {ours}"
            )
    check_modules(scenario_config(cfg, spec, False), where)


def _check_out(out: Path) -> None:
    """``out`` must be new, empty, or a previous ``fxgate train data`` build (which the new one replaces whole)."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise DatasetError(f"--out {out}: exists and is not a directory. Fix: choose a new directory")
    if out.is_dir() and any(out.iterdir()) and not is_data_manifest(read_json(out / "manifest.json")):
        raise DatasetError(
            f"--out {out}: the directory holds files that are not a `fxgate train data` build; "
            f"the build replaces the whole directory. Fix: choose a new or empty directory"
        )


def _warn(msg: str) -> None:
    warnings.warn(msg, DatasetWarning, stacklevel=3)


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Replace ``out`` by ``tmp``: two renames in one directory, the old build deleted only after."""
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
        try:
            tmp.rename(out)
        except BaseException:
            old.rename(out)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(out)


def _write_splits(
    d: Path,
    rows_by_split: dict[str, list[Row]],
    loaded: list,
    tpl: PromptTemplate,
    cert: dict[str, float],
    tok: ServedTokenizer | None,
    budget: int,
) -> dict[str, dict[str, int]]:
    table: dict[str, dict[str, int]] = {}
    for split, rows in rows_by_split.items():
        sd = d / split
        sd.mkdir()
        files = {kind: (sd / f"{kind}.jsonl").open("w") for kind in KINDS}
        try:
            for r in rows:
                meta = {
                    "source": r.src,
                    "symbol": loaded[r.src][1].symbol,
                    "ts": r.ts,
                    "label_end_ts": r.label_end_ts,
                    "proposal": r.proposal,
                    "target": r.target,
                    "move": r.move,
                    "spread": r.spread,
                    "probs": r.probs,
                    "layer1": r.l1,
                }
                files["features"].write(json.dumps(feature_example(r, meta)) + "\n")
                values = {k: r.values[k] for k in tpl.placeholders}  # what the template shows, nothing else
                if tok is None:
                    prompt = prompt_messages(tpl, values)
                else:
                    rp = served_prompt(
                        tpl,
                        values,
                        chat_template=tok.chat_template,
                        bos_token=tok.bos_token,
                        eos_token=tok.eos_token,
                        count_tokens=tok.count_tokens,
                        budget=budget,
                    )
                    prompt = list(rp.messages)
                    meta["dropped_sections"] = list(rp.dropped)
                chosen = completion(r, cert)
                files["scenarios"].write(
                    json.dumps({"prompt": prompt, "completion": chosen, "values": values, "meta": meta}) + "\n"
                )
                files["dpo"].write(
                    json.dumps(
                        {"prompt": prompt, "chosen": chosen, "rejected": rejected(r), "values": values, "meta": meta}
                    )
                    + "\n"
                )
        finally:
            for f in files.values():
                f.close()
        table[split] = {kind: len(rows) for kind in KINDS}
    return table
