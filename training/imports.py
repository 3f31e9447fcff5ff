"""Import the trader's existing JSONL training files: validation with line numbers, de-duplication, counts.

Accepted formats, detected per line:

* **Alpaca** — ``{"instruction": str, "input": str (optional), "output": str}`` → an SFT conversation;
* **chat** — ``{"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}`` (ending with an
  assistant turn) → an SFT conversation;
* **TRL preference** — ``{"prompt": str | messages, "chosen": str | messages, "rejected": str | messages}`` → a DPO
  pair.

Every problem is reported as ``file:line: field: problem``; the import fails (listing them all) unless
``skip_bad=True``, which drops those lines and counts them. Exact duplicates (same canonical JSON) and near
duplicates (same text after Unicode NFKC, lower case, and collapsing everything that is not a letter or digit) are
removed across all files, first occurrence kept. The result goes to ``imported_sft.jsonl`` and
``imported_dpo.jsonl`` with a count table per source, like the original design's data table.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fxgate.training.datasets import DatasetError

__all__ = ["import_jsonl", "parse_line", "normalized_key"]

ROLES = ("system", "user", "assistant")
_NON_WORD = re.compile(r"[^0-9a-z]+")


def _messages(v: Any, field: str, *, need_assistant_last: bool) -> list[dict[str, str]]:
    if not isinstance(v, list) or not v:
        raise ValueError(f"{field}: must be a non-empty list of {{role, content}} objects")
    out = []
    for k, m in enumerate(v):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise ValueError(f"{field}[{k}]: needs role in {ROLES} and a string content")
        if not m["content"].strip():
            raise ValueError(f"{field}[{k}]: empty content")
        out.append({"role": m["role"], "content": m["content"]})
    if need_assistant_last and out[-1]["role"] != "assistant":
        raise ValueError(f"{field}: the last message must be the assistant's answer")
    return out


def _text_or_messages(v: Any, field: str) -> str | list[dict[str, str]]:
    if isinstance(v, str):
        if not v.strip():
            raise ValueError(f"{field}: empty")
        return v
    return _messages(v, field, need_assistant_last=False)


def parse_line(obj: Any) -> tuple[str, dict[str, Any]]:
    """(kind, record) for one parsed JSON line; kind is ``sft`` or ``dpo``. Raises ValueError naming the field."""
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    if "messages" in obj:
        return "sft", {"messages": _messages(obj["messages"], "messages", need_assistant_last=True)}
    if "chosen" in obj or "rejected" in obj:
        for f in ("prompt", "chosen", "rejected"):
            if f not in obj:
                raise ValueError(f"{f}: missing (a preference line needs prompt, chosen and rejected)")
        rec = {f: _text_or_messages(obj[f], f) for f in ("prompt", "chosen", "rejected")}
        if rec["chosen"] == rec["rejected"]:
            raise ValueError("chosen: identical to rejected")
        return "dpo", rec
    if "instruction" in obj or "output" in obj:
        for f in ("instruction", "output"):
            if not isinstance(obj.get(f), str) or not obj[f].strip():
                raise ValueError(f"{f}: missing or not a non-empty string (Alpaca lines need instruction and output)")
        inp = obj.get("input", "")
        if not isinstance(inp, str):
            raise ValueError("input: must be a string")
        user = obj["instruction"] + ("\n\n" + inp if inp.strip() else "")
        return "sft", {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": obj["output"]}]}
    raise ValueError(f"unknown format (keys {sorted(obj)[:6]}); expected Alpaca instruction/input/output, chat "
                     "messages, or TRL prompt/chosen/rejected")  # fmt: skip


def _flat(rec: dict[str, Any]) -> str:
    parts = []
    for v in rec.values():
        if isinstance(v, str):
            parts.append(v)
        else:
            parts += [m["role"] + " " + m["content"] for m in v]
    return "\n".join(parts)


def normalized_key(rec: dict[str, Any]) -> str:
    """The near-duplicate key: NFKC, lower case, runs of anything but letters and digits collapsed to one space."""
    t = unicodedata.normalize("NFKC", _flat(rec)).lower()
    return hashlib.sha256(_NON_WORD.sub(" ", t).strip().encode()).hexdigest()


def import_jsonl(files: Sequence[str | Path], out_dir: str | Path, *, skip_bad: bool = False) -> dict[str, Any]:
    """Validate, de-duplicate and write the files' records; return the per-source count table."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    exact: set[str] = set()
    near: set[str] = set()
    kept: dict[str, list[dict[str, Any]]] = {"sft": [], "dpo": []}
    rows = []
    problems: list[str] = []
    for f in files:
        p = Path(f)
        try:
            lines = p.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise DatasetError(f"{p}: cannot read ({exc})") from exc
        c = {"source": str(p), "lines": 0, "bad": 0, "exact_duplicates": 0, "near_duplicates": 0, "sft": 0, "dpo": 0}
        for no, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            c["lines"] += 1
            try:
                kind, rec = parse_line(json.loads(line))
            except json.JSONDecodeError as exc:
                problems.append(f"{p}:{no}: not valid JSON ({exc.msg} at column {exc.colno})")
                c["bad"] += 1
                continue
            except ValueError as exc:
                problems.append(f"{p}:{no}: {exc}")
                c["bad"] += 1
                continue
            ek = hashlib.sha256(json.dumps(rec, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
            if ek in exact:
                c["exact_duplicates"] += 1
                continue
            exact.add(ek)
            nk = normalized_key(rec)
            if nk in near:
                c["near_duplicates"] += 1
                continue
            near.add(nk)
            kept[kind].append({**rec, "source": p.name})
            c[kind] += 1
        rows.append(c)
    if problems and not skip_bad:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise DatasetError(f"{len(problems)} bad line(s) in the JSONL imports:\n  {shown}{more}\nFix: correct the "
                           f"lines, or pass --skip-bad to drop them (they are counted)")  # fmt: skip
    written = {}
    for kind, recs in kept.items():
        with (out_dir / f"imported_{kind}.jsonl").open("w") as fh:
            for r in recs:
                fh.write(json.dumps(r, ensure_ascii=False) + "\n")
        written[kind] = len(recs)
    return {"sources": rows, "written": written, "problems": problems[:100]}
