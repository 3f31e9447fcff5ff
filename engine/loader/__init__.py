"""Load bar files the way trading platforms export them, with errors that point at the line.

Formats (``format="auto"`` sniffs the first line):

``generic``    headered OHLCV: a ``time``/``timestamp``/``date``/``datetime`` column (or ``date`` + ``time``, or the
               unnamed index column a pandas export writes), ``open high low close`` and optionally ``volume``
               (``tick_volume``, ``tickvol``, ``vol``) and ``spread``; names are case-insensitive; ``,``, ``;`` or
               tab separated; ISO-8601, epoch or one of the common layouts in ``_timeparse.KNOWN_FORMATS``.
``mt4``        MetaTrader 4 history export, no header: ``2017.04.19,09:00,1.07160,1.07220,1.07083,1.07219,1413``.
``mt5``        MetaTrader 5 export, tab separated, ``<DATE> <TIME> <OPEN> <HIGH> <LOW> <CLOSE> <TICKVOL> <VOL>
               <SPREAD>``; the spread is in points and is converted to price units (point = 10^-digits, digits
               inferred from the prices and recorded in the report).
``histdata``   HistData.com generic ASCII: ``20170419 090000;1.071600;1.072200;1.070830;1.072190;0``, in fixed EST
               (UTC-5 all year, no DST), converted to UTC.
``dukascopy``  Dukascopy CSV: ``Gmt time,Open,High,Low,Close,Volume`` with ``19.04.2017 09:00:00.000`` (UTC).
``parquet``    any Parquet file with the generic column names, or a time index (as ``Bars.to_parquet`` writes).

Any of these may be gzip-compressed (``EURUSD60.csv.gz``): gzip is recognised by its magic bytes, whatever the name,
and decompressed in memory; line numbers are those of the decompressed text. Zip archives, Excel workbooks and other
compressors are refused with the fix. Text is UTF-8 (with or without a BOM) or UTF-16 with a BOM unless
``encoding=`` names another codec (``"latin-1"``, ``"cp1252"``); a file that is not UTF-8 is refused with the line
and byte and that fix. Prices written with a decimal comma (``1,0716``, a European Excel export) are read when every
price cell of the first lines looks like ``1,0716`` (or is a whole number); ``decimal=","`` or ``decimal="."`` decides
it explicitly.

Times without a zone (generic, mt4, mt5) are read in ``tz`` (default UTC; MetaTrader servers usually run on
EET/EEST, e.g. ``tz="Europe/Athens"``) and converted to UTC. HistData and Dukascopy define their zone, so ``tz``
must be left unset for them.

A file whose bar spacing changes for good (H1 rows, then M15 rows) is refused naming the line where it changes; with
``policy="repair"`` the part with the most bars is kept and every row of the other parts is listed as dropped (see
:func:`timeframe_segments` for the rule).

Reading has two paths with one meaning (``_csv``): a fast columnar one for well-formed files and a line-by-line one
whose errors carry the exact line an editor shows. The value checks apply the bar rules of
:mod:`fxgate.engine.core.validate` (the gate applies the same rules to live bars); they and the time-order checks
are vectorized and shared by both paths (``_checks``).

The package, one concern a file: ``_decode`` (bytes to text: gzip, containers, encodings), ``_layout`` (format,
columns, time layout and decimal mark from the first lines), ``_csv`` and ``_parquet`` (parsing), ``_timeparse``
(time layouts), ``_checks`` (zones, values, order), ``_repair``, ``_spacing`` (session gaps and timeframe changes),
``_calendar`` (New York time and market closures), ``_report`` (:class:`LoadReport` and its records), ``_load``
(:func:`load_bars`, the pipeline) and ``_samples`` (the bundled EURUSD sample).
"""

from fxgate.engine.loader._layout import FORMATS
from fxgate.engine.loader._load import load_bars
from fxgate.engine.loader._report import REPAIR_ACTIONS, Change, Gap, LoadReport, Segment
from fxgate.engine.loader._samples import sample_bars, sample_path
from fxgate.engine.loader._spacing import find_gaps, timeframe_segments

__all__ = [
    "load_bars",
    "LoadReport",
    "Change",
    "Gap",
    "Segment",
    "REPAIR_ACTIONS",
    "FORMATS",
    "sample_bars",
    "sample_path",
    "timeframe_segments",
    "find_gaps",
]
