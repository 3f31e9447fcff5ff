"""fxgate's kernel cache follows every source file a kernel may inline, not only its own.

numba's on-disk cache checks only the file that defines the compiled function: a kernel in ``a.py`` calling one from
``b.py`` keeps serving the old ``b.py`` code after ``b.py`` changes. The test builds such a pair in a temporary
package, runs it in fresh processes, edits ``b.py``, and runs again: with plain ``numba.njit(cache=True)`` the
second run still prints the old answer (the hazard is real, so the test can fail), with
``fxgate.engine.core.jit.kernel`` it prints the new one.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fxgate.engine.core import jit

B = "import numba\n{deco}\ndef inner(x):\n    return x + {k}\n"
A = "import numba\nfrom b import inner\n{deco}\ndef outer(x):\n    return inner(x) * 10\n"
RUN = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from fxgate.engine.core import jit
    jit.SOURCE_ROOTS = (Path(sys.argv[1]),)
    sys.path.insert(0, sys.argv[1])
    import a
    print(a.outer(1))
    """
)


def _write(root: Path, deco: str, k: int) -> None:
    (root / "b.py").write_text(
        ("from fxgate.engine.core.jit import kernel\n" if "kernel" in deco else "") + B.format(deco=deco, k=k)
    )
    (root / "a.py").write_text(
        ("from fxgate.engine.core.jit import kernel\n" if "kernel" in deco else "") + A.format(deco=deco, k=k)
    )


def _run(root: Path, cache: Path) -> str:
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache), PYTHONDONTWRITEBYTECODE="1")
    r = subprocess.run([sys.executable, "-c", RUN, str(root)], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


@pytest.mark.parametrize(
    ("deco", "second"),
    [("@numba.njit(cache=True)", "20"), ("@kernel", "30")],
    ids=["plain numba: stale", "fxgate kernel: fresh"],
)
def test_editing_an_inlined_callee_recompiles_its_caller(tmp_path, deco, second):
    root = tmp_path / "pkg"
    root.mkdir()
    cache = tmp_path / "cache"
    _write(root, deco, 1)
    assert _run(root, cache) == "20"
    assert _run(root, cache) == "20"  # from the cache
    text = (root / "b.py").read_text().replace("x + 1", "x + 2")
    (root / "b.py").write_text(text)
    os.utime(root / "b.py")
    assert _run(root, cache) == second


def test_the_cache_directory_names_the_sources_and_respects_numba_cache_dir(tmp_path, monkeypatch):
    root = tmp_path / "src"
    root.mkdir()
    (root / "k.py").write_text("x = 1\n")
    h1 = jit.source_hash((root,))
    (root / "k.py").write_text("x = 2\n")
    assert jit.source_hash((root,)) != h1
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "nc"))
    jit._cache_dir.cache_clear()
    try:
        assert jit._cache_dir((root,)) == str(tmp_path / "nc" / f"fxgate-{jit.source_hash((root,))}")
    finally:
        jit._cache_dir.cache_clear()
