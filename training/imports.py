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

**No test-period bars through the back door.** Imports go to the training split only, so a record that carries a
date at or after the validation cut (T1 of :func:`fxgate.training.datasets.build`) is refused: a ``meta.ts`` /
``meta.label_end_ts`` (as in fxgate's own ``dpo.jsonl``, e.g. a ``test/dpo.jsonl`` fed back in), a top-level
``ts``/``time``/``timestamp``/``date``/``datetime`` field, or a ``YYYY-MM-DD[ HH:MM]`` date in the text (a date
without a time counts as the whole day). ``skip_bad=True`` drops such lines and counts them (``after_cut``).

**Sizes.** A record longer than ``max_chars`` characters (default 16,000, about the 4,096-token training sequence)
is kept but warned about: it will be truncated in training.

:func:`read_jsonl` validates everything in memory and writes nothing; :func:`write_imported` writes; the dataset
builder calls the first before it writes any file.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fxgate.training.errors import DatasetError

__all__ = [
    "import_jsonl",
    "read_jsonl",
    "write_imported",
    "parse_line",
    "normalized_key",
    "record_dates",
    "Imported",
    "MAX_RECORD_CHARS",
]

ROLES = ("system", "user", "assistant")
_NON_WORD = re.compile(r"[^0-9a-z]+")
#: records longer than this (characters) are warned about: about 4,096 tokens, the training sequence length
MAX_RECORD_CHARS = 16_000
_DATE = re.compile(r"\b((?:19|20)\d\d)-(\d\d)-(\d\d)(?:[ T](\d\d):(\d\d)(?::(\d\d))?)?")
_DATE_FIELDS = ("ts", "time", "timestamp", "date", "datetime")
_DAY_NS = 86_400 * 10**9


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
    raise ValueError(
        f"unknown format (keys {sorted(obj)[:6]}); expected Alpaca instruction/input/output, chat "
        "messages, or TRL prompt/chosen/rejected"
    )


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


def _as_ns(v: Any) -> int | None:
    """A timestamp field as int ns UTC: an integer (its magnitude tells s, ms, us or ns) or an ISO date string."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float):
        if not v == v or abs(v) == float("inf"):
            return None
        a = abs(v)
        scale = 1 if a >= 1e17 else 10**3 if a >= 1e14 else 10**6 if a >= 1e11 else 10**9
        return int(v * scale)
    if isinstance(v, str):
        got = _text_dates(v)
        return max(got) if got else None
    return None


def _text_dates(text: str) -> list[int]:
    """Every ``YYYY-MM-DD[ HH:MM[:SS]]`` in ``text`` as ns UTC; a date without a time is its day's last instant."""
    out = []
    for m in _DATE.finditer(text):
        y, mo, d, hh, mm, ss = m.groups()
        try:
            t = _dt.datetime(int(y), int(mo), int(d), int(hh or 0), int(mm or 0), int(ss or 0), tzinfo=_dt.UTC)
        except ValueError:
            continue  # 2024-13-45 is not a date
        ns = int(t.timestamp()) * 10**9
        out.append(ns + _DAY_NS - 1 if hh is None else ns)
    return out


def record_dates(obj: Any, rec: dict[str, Any] | None = None) -> list[int]:
    """The dates (ns UTC) a JSONL line carries: ``meta.ts``/``meta.label_end_ts``, top-level date fields, and dates
    written in its text (``rec``, the parsed record)."""
    out: list[int] = []
    if isinstance(obj, dict):
        meta = obj.get("meta")
        if isinstance(meta, dict):
            out += [t for k in ("ts", "label_end_ts", *_DATE_FIELDS[1:]) if (t := _as_ns(meta.get(k))) is not None]
        out += [t for k in _DATE_FIELDS if (t := _as_ns(obj.get(k))) is not None]
    if rec is not None:
        out += _text_dates(_flat(rec))
    return out


def _iso(ns: int) -> str:
    return _dt.datetime.fromtimestamp(ns // 10**9, tz=_dt.UTC).strftime("%Y-%m-%d %H:%M")


@dataclass
class Imported:
    """What :func:`read_jsonl` kept, per kind, with the per-source count table, the problems and the warnings."""

    kept: dict[str, list[dict[str, Any]]]
    sources: list[dict[str, Any]]
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def read_jsonl(
    files: Sequence[str | Path], *, skip_bad: bool = False, cut_ns: int | None = None, max_chars: int = MAX_RECORD_CHARS
) -> Imported:
    """Validate and de-duplicate the files' records in memory (nothing is written). A record dated at or after
    ``cut_ns`` (the validation cut) is a problem like a malformed line. Raises :class:`DatasetError` listing every
    problem unless ``skip_bad``, which drops those lines and counts them."""
    exact: set[str] = set()
    near: set[str] = set()
    kept: dict[str, list[dict[str, Any]]] = {"sft": [], "dpo": []}
    rows = []
    problems: list[str] = []
    warnings: list[str] = []
    for f in files:
        p = Path(f)
        try:
            lines = p.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as exc:
            raise DatasetError(
                f"{p}: not UTF-8 text (byte {exc.start}: {exc.reason}). Fix: re-save it as UTF-8 JSONL"
            ) from exc
        except OSError as exc:
            raise DatasetError(f"{p}: cannot read ({exc.strerror or exc}). Fix: check the --jsonl path") from exc
        c = {
            "source": str(p),
            "lines": 0,
            "bad": 0,
            "after_cut": 0,
            "exact_duplicates": 0,
            "near_duplicates": 0,
            "sft": 0,
            "dpo": 0,
        }
        for no, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            c["lines"] += 1
            try:
                obj = json.loads(line)
                kind, rec = parse_line(obj)
            except json.JSONDecodeError as exc:
                problems.append(f"{p}:{no}: not valid JSON ({exc.msg} at column {exc.colno})")
                c["bad"] += 1
                continue
            except ValueError as exc:
                problems.append(f"{p}:{no}: {exc}")
                c["bad"] += 1
                continue
            if cut_ns is not None:
                late = [t for t in record_dates(obj, rec) if t >= cut_ns]
                if late:
                    problems.append(
                        f"{p}:{no}: dated {_iso(max(late))} UTC, at or after the validation cut "
                        f"{_iso(cut_ns)} UTC: imports go to training, and a training record must not "
                        f"carry a validation or test-period bar"
                    )
                    c["after_cut"] += 1
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
            size = len(_flat(rec))
            if size > max_chars:
                warnings.append(
                    f"{p}:{no}: {size:,} characters, over the limit of {max_chars:,}: longer than a "
                    f"training sequence, it will be truncated in training. Fix: split or shorten "
                    f"it"
                )
            kept[kind].append({**rec, "source": p.name})
            c[kind] += 1
        rows.append(c)
    if problems and not skip_bad:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise DatasetError(
            f"{len(problems)} bad line(s) in the JSONL imports:\n  {shown}{more}\nFix: correct the "
            f"lines, or pass --skip-bad to drop them (they are counted)"
        )
    return Imported(kept, rows, problems, warnings)


def write_imported(imp: Imported, out_dir: str | Path) -> dict[str, Any]:
    """Write ``imported_sft.jsonl`` and ``imported_dpo.jsonl`` into ``out_dir``; return the count table."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for kind, recs in imp.kept.items():
        with (out_dir / f"imported_{kind}.jsonl").open("w", encoding="utf-8") as fh:
            for r in recs:
                fh.write(json.dumps(r, ensure_ascii=False) + "\n")
        written[kind] = len(recs)
    return {"sources": imp.sources, "written": written, "problems": imp.problems[:100], "warnings": imp.warnings[:100]}


def import_jsonl(
    files: Sequence[str | Path], out_dir: str | Path, *, skip_bad: bool = False, cut_ns: int | None = None
) -> dict[str, Any]:
    """Validate, de-duplicate and write the files' records; return the per-source count table."""
    return write_imported(read_jsonl(files, skip_bad=skip_bad, cut_ns=cut_ns), out_dir)
