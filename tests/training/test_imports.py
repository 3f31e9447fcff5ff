"""JSONL import: the three formats, line-numbered errors, exact and near-duplicate removal, the count table."""

from __future__ import annotations

import json

import pytest

from fxgate.training.datasets import DatasetError
from fxgate.training.imports import import_jsonl, normalized_key, parse_line


def write(p, rows):
    p.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return p


def test_formats_become_sft_or_dpo():
    k, r = parse_line({"instruction": "Explain VPIN", "input": "EURUSD", "output": "toxicity"})
    assert k == "sft" and r["messages"] == [
        {"role": "user", "content": "Explain VPIN\n\nEURUSD"},
        {"role": "assistant", "content": "toxicity"},
    ]
    k, r = parse_line(
        {
            "messages": [
                {"role": "system", "content": "s"},
                {"role": "user", "content": "u"},
                {"role": "assistant", "content": "a"},
            ]
        }
    )
    assert k == "sft" and len(r["messages"]) == 3
    k, r = parse_line({"prompt": [{"role": "user", "content": "buy?"}], "chosen": "no", "rejected": "yes"})
    assert k == "dpo" and r["chosen"] == "no"


@pytest.mark.parametrize(
    ("obj", "msg"),
    [
        ({"instruction": "x"}, "output: missing"),
        ({"instruction": "x", "output": "y", "input": 3}, "input: must be a string"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "the last message must be the assistant's answer"),
        ({"messages": [{"role": "bot", "content": "hi"}]}, "messages[0]: needs role in"),
        (
            {"messages": [{"role": "user", "content": "  "}, {"role": "assistant", "content": "a"}]},
            "messages[0]: empty",
        ),
        ({"prompt": "p", "chosen": "c"}, "rejected: missing"),
        ({"prompt": "p", "chosen": "same", "rejected": "same"}, "identical to rejected"),
        ({"text": "raw"}, "unknown format"),
        ([1, 2], "not a JSON object"),
    ],
)
def test_bad_lines_name_the_field(obj, msg):
    with pytest.raises(ValueError) as ei:
        parse_line(obj)
    assert msg in str(ei.value)


def test_errors_carry_file_and_line(tmp_path):
    p = write(tmp_path / "a.jsonl", [{"instruction": "q", "output": "a"}, "", "{not json", {"instruction": "q2"}])
    with pytest.raises(DatasetError) as ei:
        import_jsonl([p], tmp_path / "out")
    s = str(ei.value)
    assert f"{p}:3: not valid JSON" in s and f"{p}:4: output: missing" in s and "--skip-bad" in s
    r = import_jsonl([p], tmp_path / "out", skip_bad=True)
    assert r["sources"][0]["bad"] == 2 and r["written"] == {"sft": 1, "dpo": 0}


def test_exact_and_near_duplicates_across_files(tmp_path):
    a = write(
        tmp_path / "a.jsonl",
        [
            {"instruction": "What is the Kelly fraction?", "output": "f = p - (1 - p) / b"},
            {"instruction": "What is the Kelly fraction?", "output": "f = p - (1 - p) / b"},  # exact
            {"instruction": "what is the  KELLY fraction", "output": "f = p - (1-p)/b."},  # near
            {"prompt": "Buy?", "chosen": "No.", "rejected": "Yes!"},
        ],
    )
    b = write(
        tmp_path / "b.jsonl",
        [
            {
                "messages": [
                    {"role": "user", "content": "What is the Kelly fraction?"},
                    {"role": "assistant", "content": "f = p - (1 - p) / b"},
                ]
            },  # same as a:1 as chat
            {"prompt": "buy", "chosen": "no", "rejected": "yes"},  # near a:4
            {"instruction": "What is VPIN?", "output": "order-flow toxicity"},
        ],
    )
    r = import_jsonl([a, b], tmp_path / "out")
    ra, rb = r["sources"]
    assert (ra["lines"], ra["exact_duplicates"], ra["near_duplicates"], ra["sft"], ra["dpo"]) == (4, 1, 1, 1, 1)
    assert (rb["lines"], rb["exact_duplicates"], rb["near_duplicates"], rb["sft"], rb["dpo"]) == (3, 1, 1, 1, 0)
    sft = [json.loads(x) for x in (tmp_path / "out" / "imported_sft.jsonl").read_text().splitlines()]
    assert [s["source"] for s in sft] == ["a.jsonl", "b.jsonl"]  # first occurrence kept
    # the near-duplicate key ignores case, spacing and punctuation, not words or numbers
    k = normalized_key({"x": "Kelly: f = p - q/b"})
    assert k == normalized_key({"x": "kelly f=p-q / b!"}) and k != normalized_key({"x": "Kelly: f = 2p - q/b"})


def test_records_over_the_size_limit_are_kept_with_a_warning_naming_the_line(tmp_path):
    from fxgate.training.imports import read_jsonl

    long = "x" * 600
    p = write(tmp_path / "a.jsonl", [{"instruction": "short", "output": "ok"}, {"instruction": long, "output": "a"}])
    r = read_jsonl([p], max_chars=500)
    assert r.sources[0]["sft"] == 2 and len(r.warnings) == 1
    assert r.warnings[0].startswith(f"{p}:2: 617 characters, over the limit of 500") and "truncated" in r.warnings[0]
    assert read_jsonl([p]).warnings == []  # the default limit is a training sequence, about 16,000 characters
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes('{"instruction": "caf\xe9", "output": "a"}\n'.encode("latin-1"))
    with pytest.raises(DatasetError, match="latin1.jsonl: not UTF-8 text"):
        read_jsonl([bad])


def test_record_dates_reads_fields_and_text():
    from fxgate.training.imports import record_dates

    ns = 1_700_000_000 * 10**9
    assert record_dates({"meta": {"ts": ns, "label_end_ts": ns + 5}}) == [ns, ns + 5]
    assert record_dates({"ts": 1_700_000_000}) == [ns]  # seconds, by magnitude
    assert record_dates({"date": "2023-11-14 22:13"}) == [ns - 20 * 10**9]
    day_end = (1_700_006_400 - 1) * 10**9 + 999_999_999  # 2023-11-14 23:59:59.999999999
    assert record_dates({}, {"messages": [{"role": "user", "content": "on 2023-11-14, buy?"}]}) == [day_end]
    assert record_dates({}, {"messages": [{"role": "user", "content": "2023-13-45 is no date"}]}) == []
