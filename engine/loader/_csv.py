"""Parsing CSV bar files: a fast columnar path and a line-by-line path with exact diagnostics.

The fast path (:func:`parse_fast`) parses a well-formed file column-wise (Arrow CSV reader, vectorized time parsing)
and maps row ``i`` to file line ``i + 1 + header``. Anything irregular — a blank or truncated line, an unparsable
cell — raises :class:`Irregular`, and the file goes to :func:`parse_slow`, which reads it line by line so that every
error carries the exact line an editor shows.
"""

from __future__ import annotations

import csv
import io

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from fxgate.engine.core.errors import Problem
from fxgate.engine.loader import _timeparse as tp
from fxgate.engine.loader._layout import COMMA_NUMBER, DECIMAL_FIX, DOT_NUMBER, ZONE_RE, Layout
from fxgate.engine.loader._raw import REPAIR_HINT, VALUE_COLUMNS, Raw, split_row


class Irregular(Exception):
    """The fast path met something it does not handle; the slow path decides."""


def _times_from_strings(col: object, lay: Layout) -> tuple[np.ndarray, bool]:
    """Naive (or UTC, when zone-suffixed) ns from an Arrow string column laid out as ``lay.time_format``."""
    fmt = lay.time_format
    if len(col) == 0:
        return np.zeros(0, np.int64), False
    first = str(col[0])
    fixed = tp.iso_fixed_format(first) if fmt == "iso" else fmt
    if fixed is not None and fixed != "epoch" and tp.fixed_width(fixed) is not None:
        ns, ok = tp.parse_fixed(col, fixed)
        if ok.all():
            return ns, fixed.endswith("Z")
    # not fixed-width (e.g. '9:00' next to '10:00'): pandas, strict, vectorized
    values = col.to_numpy(zero_copy_only=False)
    try:
        if fmt == "iso":
            has_zone = pd.Series(values).str.contains(ZONE_RE.pattern, regex=True)
            if has_zone.any() and not has_zone.all():
                raise Irregular
            idx = pd.DatetimeIndex(pd.to_datetime(values, format="ISO8601", utc=bool(has_zone.all())))
            if idx.tz is not None:
                idx = idx.tz_convert("UTC").tz_localize(None)
            return idx.as_unit("ns").asi8, bool(has_zone.all())
        return pd.DatetimeIndex(pd.to_datetime(values, format=fmt)).as_unit("ns").asi8, False
    except Irregular:
        raise
    except Exception as exc:  # any parse failure sends the file to the line-by-line path
        raise Irregular from exc


def _fast_times(table: object, names: list[str], lay: Layout) -> tuple[np.ndarray, bool]:
    if "date" in lay.index:
        d = table.column(names[lay.index["date"]])
        c = table.column(names[lay.index["clock"]])
        if d.null_count or c.null_count:
            raise Irregular
        if lay.time_format not in ("iso", "epoch") and " " in lay.time_format:
            date_fmt, clock_fmt = lay.time_format.split(" ", 1)
            nd, okd = tp.parse_fixed(d, date_fmt)
            nc, okc = tp.parse_fixed(c, clock_fmt)
            if okd.all() and okc.all():
                return nd + nc, False
        joined = pc.binary_join_element_wise(pc.utf8_trim_whitespace(d), pc.utf8_trim_whitespace(c), " ")
        return _times_from_strings(joined, lay)
    col = table.column(names[lay.index["time"]])
    if col.null_count:
        raise Irregular
    if pa.types.is_timestamp(col.type):
        return col.cast(pa.int64()).to_numpy(), col.type.tz is not None
    if pa.types.is_integer(col.type):
        return tp.epoch_to_ns(col.to_numpy()), True
    return _times_from_strings(col, lay)


def parse_fast(source: str | bytes, lay: Layout) -> Raw:
    names = [f"c{i}" for i in range(lay.ncols)]
    types: dict[str, object] = {}
    for canon, i in lay.index.items():
        if canon == "time" and lay.time_format == "iso":
            types[names[i]] = pa.timestamp("ns", tz="UTC") if lay.time_aware else pa.timestamp("ns")
        elif canon == "time" and lay.time_format == "epoch":
            types[names[i]] = pa.int64()
        elif canon in ("time", "date", "clock"):
            types[names[i]] = pa.string()
        else:
            types[names[i]] = pa.float64()
    try:
        # a path is opened without compression: Arrow would otherwise decompress by the name (.gz, .bz2), and the
        # bytes of a gzip file arrive here already decompressed
        stream = io.BytesIO(source) if isinstance(source, bytes) else pa.input_stream(source, compression=None)
        table = pcsv.read_csv(
            stream,
            read_options=pcsv.ReadOptions(skip_rows=lay.header_lines, column_names=names, block_size=1 << 22),
            parse_options=pcsv.ParseOptions(delimiter=lay.delimiter, ignore_empty_lines=False),
            convert_options=pcsv.ConvertOptions(
                column_types=types,
                include_columns=list(types),
                null_values=[""],
                strings_can_be_null=True,
                quoted_strings_can_be_null=True,
                decimal_point=lay.decimal,
            ),
        )
    except Exception as exc:  # pyarrow raises several types; all mean "irregular"
        raise Irregular from exc
    n = table.num_rows
    cols: dict[str, np.ndarray] = {}
    for canon in VALUE_COLUMNS:
        if canon in lay.index:
            col = table.column(names[lay.index[canon]])
            if col.null_count:
                raise Irregular
            cols[canon] = col.to_numpy()
    ts, aware = _fast_times(table, names, lay)
    if len(ts) != n:  # pragma: no cover - Arrow guarantees equal column lengths
        raise Irregular
    return Raw(ts + lay.utc_offset_ns, cols, lay.header_lines + 1, [], aware)


def _number(cell: str, decimal: str) -> float:
    """One value cell as a float, with ``decimal`` as the decimal mark (the other mark is not accepted)."""
    if decimal == ",":
        if "." in cell:
            raise ValueError(cell)
        cell = cell.replace(",", ".", 1)
    elif "," in cell:
        raise ValueError(cell)
    return float(cell)


def parse_slow(path: str, text: str, lay: Layout) -> Raw:
    """Line-by-line parse. Rows with a bad cell become Problems and are left out of the result."""
    problems: list[Problem] = []
    value_idx = [(c, lay.index[c]) for c in VALUE_COLUMNS if c in lay.index]
    out_vals: dict[str, list[float]] = {c: [] for c, _ in value_idx}
    out_ts: list[int] = []
    out_lines: list[int] = []
    aware_seen: set[bool] = set()
    need = max(lay.index.values()) + 1
    for no, raw in enumerate(text.split("\n"), 1):
        if no <= lay.header_lines:
            continue
        line = raw.rstrip("\r")
        if not line.strip():
            continue
        try:
            cells = split_row(line, lay.delimiter)
        except csv.Error as exc:
            problems.append(Problem(path, no, None, "bad_row", f"malformed CSV row ({exc})", REPAIR_HINT))
            continue
        if len(cells) < need or len(cells) < lay.ncols:
            problems.append(
                Problem(
                    path,
                    no,
                    None,
                    "truncated_row",
                    f"truncated row: {len(cells)} of {lay.ncols} fields ({line[:60]!r})",
                    "the export was probably cut off: re-export the file, or delete the line "
                    "(policy='repair' drops it)",
                )
            )
            continue
        if len(cells) > lay.ncols:
            problems.append(
                Problem(
                    path,
                    no,
                    None,
                    "bad_row",
                    f"{len(cells)} fields where the header has {lay.ncols}",
                    "check the delimiter and quoting of this row; " + REPAIR_HINT,
                )
            )
            continue
        bad = False
        vals: dict[str, float] = {}
        for canon, i in value_idx:
            cell = cells[i].strip().strip('"')
            if cell == "":
                problems.append(Problem(path, no, lay.labels[canon], "missing_value", "empty value", REPAIR_HINT))
                bad = True
                continue
            try:
                vals[canon] = _number(cell, lay.decimal)
            except ValueError:
                if lay.decimal == "." and COMMA_NUMBER.match(cell):
                    fix = "this looks like a decimal comma: " + DECIMAL_FIX + "; or " + REPAIR_HINT
                elif lay.decimal == "," and DOT_NUMBER.match(cell):
                    fix = "decimal=',' reads '1,0716', not '1.0716': write this value with a comma; or " + REPAIR_HINT
                else:
                    fix = REPAIR_HINT
                problems.append(Problem(path, no, lay.labels[canon], "bad_number", f"unparsable number {cell!r}", fix))
                bad = True
        if "date" in lay.index:
            ttext = f"{cells[lay.index['date']].strip()} {cells[lay.index['clock']].strip()}"
        else:
            ttext = cells[lay.index["time"]].strip().strip('"')
        try:
            t = tp.strptime_ns(ttext, lay.time_format)
            if lay.time_format == "iso":
                aware_seen.add(bool(ZONE_RE.search(ttext)))
        except (ValueError, OverflowError):
            shown = "ISO 8601" if lay.time_format == "iso" else lay.time_format
            problems.append(
                Problem(
                    path,
                    no,
                    lay.labels["time"],
                    "bad_time",
                    f"unparsable time {ttext!r} (expected {shown})",
                    REPAIR_HINT,
                )
            )
            bad = True
        if bad:
            continue
        out_ts.append(t)
        out_lines.append(no)
        for canon, _ in value_idx:
            out_vals[canon].append(vals[canon])
    aware = lay.time_format == "epoch" or aware_seen == {True}
    if aware_seen == {True, False}:
        problems.append(
            Problem(
                path,
                None,
                lay.labels["time"],
                "mixed_zones",
                "some times carry a zone offset and some do not",
                "write every time with its offset, or none",
            )
        )
    cols = {c: np.array(v, dtype=np.float64) for c, v in out_vals.items()}
    return Raw(
        np.array(out_ts, dtype=np.int64) + lay.utc_offset_ns,
        cols,
        np.array(out_lines, np.int64),
        problems,
        aware,
    )
