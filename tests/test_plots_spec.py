"""`trainwell plots` draws DVC's specs as the report site draws the same data (generated specs, no DVC run)."""

from __future__ import annotations

import numpy as np
import pytest

from trainwell.stages.plots import as_the_site_draws


def confusion_spec() -> dict:
    return {"params": [{"name": "showValues", "bind": {"input": "checkbox"}}, {"name": "other"}], "spec": {}}


def test_confusion_counts_are_switched_on_and_nothing_else_changes():
    drawn = as_the_site_draws(confusion_spec())
    assert drawn["params"] == [{"name": "showValues", "value": True}, {"name": "other"}]
    assert drawn["spec"] == {}


@pytest.mark.parametrize("seed", range(20))
def test_a_reliability_table_is_drawn_with_its_diagonal_and_counts(seed):
    rng = np.random.default_rng(seed)
    rows = [{"bin": str(index), "lower": str(index / 10), "upper": str((index + 1) / 10),
             "confidence": str(rng.uniform(index / 10, (index + 1) / 10)), "accuracy": str(rng.uniform()),
             "count": str(int(rng.integers(1, 500))), "rev": "workspace"} for index in range(int(rng.integers(1, 10)))]
    drawn = as_the_site_draws({"data": {"values": rows}, "layer": []})
    diagram = drawn["vconcat"][0]
    assert "perfect calibration" in diagram["title"]
    labels = [point["label"] for point in diagram["layer"][1]["data"]["values"]]
    assert labels == [row["count"] for row in rows]


@pytest.mark.parametrize("rows", [
    [{"lower": "x", "upper": "1", "confidence": "1", "accuracy": "1", "count": "1"}],  # not a number
    [{"lower": "0", "upper": "1", "confidence": "1", "accuracy": "1", "count": "1", "rev": "a"},
     {"lower": "0", "upper": "1", "confidence": "1", "accuracy": "1", "count": "1", "rev": "b"}],  # two revisions
    [{"confidence": "1", "accuracy": "1"}],  # another table
    ["not a row"], [], None,
])
def test_anything_else_is_drawn_as_dvc_gave_it(rows):
    spec = {"data": {"values": rows}, "layer": [{"mark": "line"}]}
    assert as_the_site_draws(spec) == spec

