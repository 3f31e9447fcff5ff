"""What is asked of the catalogue: entries per category and their counts, the ``fxgate train formulas --list``
table, and the formula-knowledge SFT conversations."""

from __future__ import annotations

import difflib
from typing import Any

from fxgate.training.formulas.catalogue import CATALOGUE, CATEGORIES, Formula

__all__ = ["by_category", "counts", "rows", "listing", "sft_samples"]


def by_category() -> dict[str, list[Formula]]:
    """The entries of each category, in catalogue order (every category present, empty or not)."""
    out: dict[str, list[Formula]] = {c: [] for c in CATEGORIES}
    for f in CATALOGUE:
        out[f.category].append(f)
    return out


def counts() -> dict[str, dict[str, int]]:
    """Per category: how many entries, and how many of them fxgate computes."""
    return {c: {"entries": len(fs), "computable": sum(f.computable for f in fs)} for c, fs in by_category().items()}


def _check_category(category: str | None) -> None:
    if category is not None and category not in CATEGORIES:
        near = difflib.get_close_matches(category, CATEGORIES, n=1)
        hint = f" Did you mean {near[0]!r}?" if near else ""
        raise ValueError(f"unknown formula category {category!r}.{hint} Categories: {', '.join(CATEGORIES)}")


def _function(f: Formula) -> str:
    """The fxgate call that computes ``f`` (module path, name, inputs); empty for a described-only entry."""
    return f"{f.compute.__module__}.{f.compute.__name__}({f.inputs})" if f.compute is not None else ""


def rows(category: str | None = None) -> list[dict[str, str]]:
    """One row per catalogue entry (of ``category``, or all): name, category, formula, citation, and ``status``
    ``computed`` (with the function that computes it) or ``described``."""
    _check_category(category)
    return [
        {
            "name": f.name,
            "category": f.category,
            "formula": f.formula,
            "citation": f.citation,
            "status": "computed" if f.computable else "described",
            "function": _function(f),
        }
        for f in CATALOGUE
        if category is None or f.category == category
    ]


def listing(category: str | None = None) -> str:
    """The catalogue as text, for ``fxgate train formulas --list [--category C]``: per category a heading with its
    counts, then one entry per line — name, computed/described, formula, citation — and a total line."""
    rs = rows(category)
    lines: list[str] = []
    cats = [category] if category is not None else list(CATEGORIES)
    for c in cats:
        mine = [r for r in rs if r["category"] == c]
        n_comp = sum(r["status"] == "computed" for r in mine)
        lines.append(f"{c} ({len(mine)} entries, {n_comp} computed, {len(mine) - n_comp} described only)")
        width = max((len(r["name"]) for r in mine), default=0)
        for r in mine:
            lines.append(f"  {r['name']:<{width}}  {r['status']:<9}  {r['formula']}  [{r['citation']}]")
    n_comp = sum(r["status"] == "computed" for r in rs)
    lines.append(f"total: {len(rs)} entries, {n_comp} computed, {len(rs) - n_comp} described only")
    return "\n".join(lines)


def sft_samples() -> list[dict[str, Any]]:
    """One formula-knowledge conversation per entry (chat ``messages`` format)."""
    out = []
    for f in CATALOGUE:
        how = (
            f"fxgate computes it with {_function(f)}."
            if f.compute is not None
            else "fxgate describes it but does not compute it."
        )
        out.append(
            {
                "messages": [
                    {
                        "role": "user",
                        "content": f"What is {f.name} ({f.category.replace('_', ' ')}), and how is it computed?",
                    },
                    {"role": "assistant", "content": f"{f.name}: {f.formula}. Source: {f.citation}. {how}"},
                ],
                "category": f.category,
            }
        )
    return out
