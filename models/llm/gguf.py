"""The model file, checked before anything loads it: it exists, starts with the GGUF magic, and has the expected
sha256 (recorded in every Decision's ``model_hashes``)."""

from __future__ import annotations

from pathlib import Path

from fxgate.engine.core.hashing import file_sha256
from fxgate.models.llm.errors import ModelFileError

__all__ = ["GGUF_MAGIC", "verify_gguf"]

GGUF_MAGIC = b"GGUF"

# Hashing a multi-GB model takes seconds; a gate (and every test) verifies the same file many times.
_SHA_MEMO: dict[tuple[str, int, int], str] = {}


def verify_gguf(path: str | Path, expected_sha256: str = "") -> str:
    """Check that ``path`` is a readable GGUF file (and, if given, that its sha256 starts with
    ``expected_sha256``); return its sha256. Raises :class:`ModelFileError` naming the file and the fix."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ModelFileError(
            f"{p}: model file not found. Fix: set [llm] model to a GGUF file (`fxgate demo` builds "
            f"the nano model into ~/.cache/fxgate/)"
        )
    st = p.stat()
    with p.open("rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise ModelFileError(
            f"{p}: not a GGUF file (first bytes {magic!r}, expected {GGUF_MAGIC!r}). Fix: "
            f"convert the model to GGUF (fxgate.training.export) or point [llm] model at the "
            f".gguf file"
        )
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)  # a rewritten file is hashed again
    digest = _SHA_MEMO.get(key)
    if digest is None:
        digest = _SHA_MEMO[key] = file_sha256(p)
    if expected_sha256 and not digest.startswith(expected_sha256.lower()):
        raise ModelFileError(
            f"{p}: sha256 {digest[:16]}… does not match the expected {expected_sha256[:16]}… — the "
            f"file is altered or not the model this config was written for"
        )
    return digest
