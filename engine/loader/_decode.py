"""From a file's bytes to its text: gzip is decompressed in memory, archives and spreadsheets are refused with what
they are, and the text is decoded with errors that give the line and byte (and the encoding fix)."""

from __future__ import annotations

import gzip
import zipfile
import zlib
from pathlib import Path

from fxgate.engine.loader._raw import data_error

#: Bytes read to sniff the format; the rest of the file goes straight to the CSV reader.
HEAD_BYTES = 1 << 16

_ENCODING_FIX = (
    "pass the file's encoding, e.g. encoding='latin-1' or 'cp1252' for a Windows export (CLI: --encoding latin-1), "
    "or re-save the file as UTF-8"
)


def _where(raw: bytes, at: int) -> tuple[int, int, str]:
    """Line (1-based) and byte within the line (1-based) of byte offset ``at``, and the text around it with the
    byte shown as ``<0x..>``."""
    line = raw.count(b"\n", 0, at) + 1
    start = raw.rfind(b"\n", 0, at) + 1
    end = raw.find(b"\n", at)
    end = len(raw) if end < 0 else end
    before = raw[max(start, at - 40) : at].decode("utf-8", "replace")
    after = raw[at + 1 : min(end, at + 21)].rstrip(b"\r").decode("utf-8", "replace")
    return line, at - start + 1, f"{before}<{raw[at]:#04x}>{after}"


def read_text(raw: bytes, path: str, encoding: str | None = None) -> tuple[str, bytes | None]:
    """Decode the file; returns the text and, when it had to be re-encoded, UTF-8 bytes for the fast path.

    ``encoding=None`` reads UTF-8 (a BOM is dropped) or UTF-16 with a BOM; any other codec must be named."""
    if encoding is not None:
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError as exc:
            line, col, shown = _where(raw, exc.start)
            raise data_error(
                path,
                line,
                None,
                "encoding",
                f"byte {col} of the line ({raw[exc.start]:#04x}, file offset {exc.start}) is not {encoding} text "
                f"(here: {shown!r})",
                "check encoding= (CLI: --encoding): leave it unset for UTF-8, or name the codec the file was saved "
                "with",
            ) from exc
        text = text.removeprefix("\ufeff")
        return text, text.encode("utf-8")
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            text = raw.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise data_error(
                path, None, None, "encoding", f"broken UTF-16 text ({exc})", "re-export the file as UTF-8 or ANSI"
            ) from exc
        return text, text.encode("utf-8")
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
        recoded: bytes | None = raw
    else:
        recoded = None
    try:
        return raw.decode("utf-8"), recoded
    except UnicodeDecodeError as exc:
        line, col, shown = _where(raw, exc.start)
        offset = exc.start + (3 if recoded is not None else 0)
        byte = raw[exc.start]
        if b"\x00" in raw[:HEAD_BYTES]:  # NUL bytes: not a text export at all
            raise data_error(
                path,
                line,
                None,
                "encoding",
                f"byte {col} of the line ({byte:#04x}, file offset {offset}) is not UTF-8 text, and the file holds NUL "
                "bytes: it is not a text file",
                "a bar file is text (CSV) or Parquet: check that this is the exported file and not another one",
            ) from exc
        guess = bytes([byte]).decode("cp1252", "replace")
        raise data_error(
            path,
            line,
            None,
            "encoding",
            f"byte {col} of the line ({byte:#04x}, file offset {offset}) is not UTF-8 text: the file was saved in "
            f"another encoding ({byte:#04x} is {guess!r} in Windows-1252/latin-1), here: {shown!r}",
            _ENCODING_FIX,
        ) from exc


GZIP_MAGIC = b"\x1f\x8b"
_READS = "fxgate reads CSV, gzip-compressed CSV (.csv.gz) and Parquet directly"
#: (magic bytes, what the file is, what to do) for containers fxgate does not open itself
_CONTAINERS = (
    (b"\xfd7zXZ\x00", "xz-compressed", "decompress it (unxz FILE)"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive", "extract the CSV from it"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed", "decompress it (unzstd FILE)"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "a legacy Excel workbook (.xls)", "save the sheet as CSV in Excel"),
)


def refuse_container(path: str, p: Path, head: bytes) -> None:
    """An archive, another compressor or a spreadsheet is refused with what it is and what to do."""
    what = fix = ""
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        try:
            with zipfile.ZipFile(p) as z:
                members = z.namelist()
        except (zipfile.BadZipFile, OSError):
            members = []
        if any(m.startswith("xl/") for m in members):
            what, fix = "an Excel workbook (.xlsx)", "save the sheet as CSV in Excel (File > Save As > CSV UTF-8)"
        else:
            shown = ", ".join(members[:5]) + (f" and {len(members) - 5} more" if len(members) > 5 else "")
            what = f"a zip archive ({shown or 'unreadable member list'})"
            fix = "extract the bar file from it (unzip FILE) and pass that"
    elif head.startswith(b"BZh") and head[3:4].isdigit() and head[4:10] in (b"1AY&SY", b"\x17rE8P"):
        what, fix = "bzip2-compressed", "decompress it (bunzip2 FILE)"
    else:
        for magic, what_, fix_ in _CONTAINERS:
            if head.startswith(magic):
                what, fix = what_, fix_
                break
    if what:
        raise data_error(path, None, None, "container", f"the file is {what}, not a bar file", f"{fix}; {_READS}")


def gunzip(path: str, raw: bytes) -> bytes:
    """The decompressed content of a gzip file; a damaged one is refused with the fix."""
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError; a cut-off file is an EOFError
        raise data_error(
            path,
            None,
            None,
            "bad_gzip",
            f"gzip-compressed, but it does not decompress ({exc or type(exc).__name__})",
            "the file is probably cut off or damaged: copy or download it again (gzip -t FILE checks it), or "
            "decompress it yourself and pass the CSV",
        ) from exc
