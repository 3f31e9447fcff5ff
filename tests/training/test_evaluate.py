"""The evaluation harness: metrics against hand computations, and a run of the nano model on a built test split."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fxgate.engine import sample_bars
from fxgate.training.datasets import DatasetError, SplitSpec, build
from fxgate.training.evaluate import ece, evaluate, score, table


def test_ece_against_a_hand_computation():
    c = np.array([0.05, 0.15, 0.15, 0.95, 0.95, 0.95, 0.99])
    y = np.array([0, 1, 0, 1, 1, 0, 1])
    # bins: [0,.1): (.05, 0); [.1,.2): (.15, .5); [.9,1]: (mean .96, .75)
    ref = 1 / 7 * 0.05 + 2 / 7 * abs(0.5 - 0.15) + 4 / 7 * abs(0.75 - np.mean([0.95, 0.95, 0.95, 0.99]))
    assert ece(c, y) == pytest.approx(ref)
    assert math.isnan(ece(np.array([]), np.array([])))


def test_score_by_hand():
    answers = ["BUY", "SELL", "NONE", "BUY", None]
    certs = [0.97, 0.96, 0.99, 0.50, None]
    targets = ["BUY", "BUY", "NONE", "BUY", "SELL"]
    s = score(answers, certs, targets, 0.95)
    assert (s["n"], s["answered"], s["confident"]) == (5, 4, 2)
    assert s["accuracy"] == pytest.approx(3 / 5) and s["coverage"] == pytest.approx(2 / 5)
    assert s["precision"] == pytest.approx(1 / 2)
    from fxgate.models._stats import wilson

    assert s["precision_ci95"] == list(wilson(1, 2))


@pytest.mark.slow
def test_nano_model_is_scored_against_the_baselines(nano, tmp_path):
    p = tmp_path / "EURUSD.csv"
    sample_bars().to_csv(p)
    build([p], tmp_path / "d", SplitSpec(horizon=1, spread=8e-5))
    r = evaluate(nano["q8"], tmp_path / "d", limit=25, think_budget=4, n_threads=2)
    s = r["model_scores"]
    assert s["n"] == 25 and s["answered"] == 25 and not r["errors"]
    assert set(r["baselines"]) == {"majority", "layer1", "random_same_coverage"}
    assert "without a Layer-1 bundle" in r["baselines"]["layer1"]["note"]
    assert r["baselines"]["majority"]["class"] in ("BUY", "SELL", "NONE")
    assert sum(r["outcomes"].values()) == 25
    assert "model" in table(r) and "majority" in table(r)
    with pytest.raises(DatasetError, match="a Hugging Face directory"):
        evaluate(nano["hf"], tmp_path / "d")
    with pytest.raises(DatasetError, match="not found"):
        evaluate(nano["q8"], tmp_path / "nothing")


def test_table_of_a_report_read_back_from_the_strict_json_manifest():
    """The run manifest stores the evaluation as strict JSON (NaN -> null); `fxgate train all` prints its table
    from there, so a metric that is NaN (no usable answer: no ECE) must print as "-", not crash."""
    import json

    from fxgate.training.pipeline.manifest import _strict

    s = score([None, None, None], [None, None, None], ["BUY", "SELL", "NONE"], 0.95)
    assert math.isnan(s["ece"])
    rand = {"confident": 0, "precision_mean": None}
    r = {"model_scores": s, "baselines": {"majority": {"class": "NONE", **s}, "random_same_coverage": rand}}
    back = json.loads(json.dumps(_strict(r), allow_nan=False))
    assert back["model_scores"]["ece"] is None
    t = table(back)
    assert t.splitlines()[1].startswith("model") and t.splitlines()[1].rstrip().endswith("-")
    assert table(r) == t
