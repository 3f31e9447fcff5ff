"""Loading a Layer-1 bundle, the native predictions and explanations a live gate makes, and a fit (a replay's
refit) leave no OpenMP thread behind on the calling thread (models/ensemble/model.py ``TreeEnsemble.load`` and
``fit``, boosters.py).

Why it matters: llama.cpp's CPU backend runs on the calling thread's OpenMP team, and once the process holds more
OpenMP threads than cores, libgomp barely spins at barriers. On 2 cores a bundle loaded on the gate's thread made
the debate 5x slower (benchmarks/RESULTS.md). The check is the process's thread count, read from
``/proc/self/task``, in a fresh interpreter (this test process has fitted models before).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from fxgate.engine import sample_bars
from fxgate.models.ensemble import EnsembleConfig, TreeEnsemble
from fxgate.models.labels import LabelSpec

SCRIPT = r"""
import os, sys, time
import numpy as np
from fxgate.models.ensemble import TreeEnsemble
from fxgate.models.ensemble.boosters import ADAPTERS

def settled(want=None):
    # OpenMP threads of an ended thread exit shortly after it: wait for the count to stop changing
    last, t0 = -1, time.monotonic()
    while time.monotonic() - t0 < 5:
        n = len(os.listdir("/proc/self/task"))
        if n == last and (want is None or n <= want):
            return n
        last = n
        time.sleep(0.2)
    return n

from fxgate.engine import sample_bars
from fxgate.models.ensemble import EnsembleConfig
from fxgate.models.labels import LabelSpec

# threads that are no OpenMP team and stay by design, started before the count: pyarrow's pool (reading the sample)
# and CatBoost's own executor (it links no libgomp)
bars = sample_bars()[:800]
cfg = EnsembleConfig(n_estimators=5, max_depth=2)
rows = np.random.default_rng(0).random((200, 4))
ADAPTERS[2].train(rows, (rows[:, 0] > 0.5).astype(float), cfg)
base = settled()
e = TreeEnsemble.load(sys.argv[1])
after_load = settled(base)
from fxgate.models.features import feature_names
x = np.random.default_rng(0).random((8, len(feature_names())))
e.predict_proba(x, native=True)
for a in ADAPTERS:
    a.explain(e.models[a.name], x[0])
e.predict_quantiles_native(x) if e.has_quantiles else None
after_calls = settled(base)
TreeEnsemble().fit(bars, LabelSpec("next", 1), cfg, evaluate=False)
print(base, after_load, after_calls, settled(base))
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc to count threads")
def test_bundle_load_native_calls_and_fit_leave_no_openmp_threads(tmp_path):
    e = TreeEnsemble()
    e.fit(sample_bars()[:1500], LabelSpec("next", 1), EnsembleConfig(n_estimators=10, max_depth=3), evaluate=False)
    e.save(tmp_path / "b")
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    r = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "b")], capture_output=True, text=True, timeout=300, env=env
    )
    assert r.returncode == 0, r.stderr[-3000:]
    base, after_load, after_calls, after_fit = map(int, r.stdout.split()[-4:])
    assert after_load == base, f"the bundle load left {after_load - base} threads behind"
    assert after_calls == base, f"the native predictions left {after_calls - base} threads behind"
    assert after_fit == base, f"a fit left {after_fit - base} threads behind"


def test_a_fit_whose_caller_is_interrupted_stops_at_its_next_step_and_leaves_the_ensemble_as_it_was():
    """Ctrl-C while ``fit`` waits for its thread: the caller gets the KeyboardInterrupt at once, and the fit
    thread ends at its next progress step (it does not run the remaining folds and the final fit for nobody);
    the ensemble keeps its old state. The thread runs in the caller's context (a ContextVar set here is read in
    the progress callback, which runs on the fit's thread)."""
    import _thread
    import contextvars
    import signal
    import threading

    var: contextvars.ContextVar[str] = contextvars.ContextVar("fxgate_test_var", default="unset")
    var.set("the caller's")
    seen: list[tuple[str, str]] = []

    delivered = threading.Event()

    def on_sigint(signum, frame):  # type: ignore[no-untyped-def]
        delivered.set()
        raise KeyboardInterrupt

    def progress(msg: str) -> None:
        seen.append((msg, var.get()))
        if len(seen) == 1:
            _thread.interrupt_main()  # as Ctrl-C: raised in the main thread, which is waiting in fit
            delivered.wait(60)  # until the caller has it: the fit's next step (a fold's training) comes after

    e = TreeEnsemble()
    e.fit(sample_bars()[:800], LabelSpec("next", 1), EnsembleConfig(n_estimators=3, max_depth=2), evaluate=False)
    before = dict(e.__dict__)
    cfg = EnsembleConfig(n_estimators=20, max_depth=3, folds=4)
    old = signal.signal(signal.SIGINT, on_sigint)
    try:
        with pytest.raises(KeyboardInterrupt):
            e.fit(sample_bars()[:2400], LabelSpec("next", 2), cfg, progress=progress)
    finally:
        signal.signal(signal.SIGINT, old)
    # the interrupt reached the caller only once the fit's thread had ended: nothing of it runs afterwards
    assert not any(t.name == "fxgate-boosters" for t in threading.enumerate())
    assert seen[0][0].startswith("fold 1/4: ") and seen[0][1] == "the caller's"
    assert len(seen) == 1, f"the fit went on after its caller was interrupted: {seen}"
    assert e.__dict__.keys() == before.keys() and all(e.__dict__[k] is v for k, v in before.items())
    assert e.label_spec == LabelSpec("next", 1) and e.config.n_estimators == 3  # the earlier fit, whole
