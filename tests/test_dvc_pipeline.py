"""The real thing: `dvc repro` end to end in a temporary git repository, with tiny params."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.helpers import (
    CLASSES,
    REPO_ROOT,
    copy_project,
    make_project,
    pipeline_params,
    run,
    tiny_params,
    write_params,
)
from trainwell.reports.card import markdown_text

# The shared `reproduced` and `experimented` projects (conftest.py) train; the rest run dvc repro.
pytestmark = pytest.mark.dvc

STAGES = ["demo_data", "audit", "split", "build", "label_review", "train", "evaluate", "export", "card", "report"]


def ran_stages(output: str) -> list[str]:
    return [stage for stage in STAGES if f"Running stage '{stage}'" in output]


@pytest.mark.train
def test_repro_end_to_end_then_cached(reproduced):
    project = reproduced.folder
    assert ran_stages(reproduced.output) == STAGES
    assert (project / "models" / "model.keras").is_file()
    evaluation = json.loads((project / "metrics" / "eval.json").read_text())
    assert evaluation["test_images"] == 15

    # Git sees only what DVC means it to track: the lock file, small metrics, .gitignore entries.
    changed = [line[3:] for line in run(["git", "status", "--porcelain", "-uall"], project).stdout.splitlines()]
    assert "dvc.lock" in changed
    allowed = {"dvc.lock", ".trainwell/versions.json", "metrics/audit.json", "metrics/split.json", "metrics/eval.json", "dvclive/metrics.json",
               "metrics/labels.json", "reports/train/incidents.json", "metrics/export.json", "models/card.md",
               "models/card.json"}
    assert [path for path in changed if path not in allowed and not path.endswith(".gitignore")] == []

    card = json.loads((project / "models" / "card.json").read_text())
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    audited = {dep["path"]: dep["md5"] for dep in lock["stages"]["audit"]["deps"]}
    assert card["data"]["version"] == audited["data/demo"] and card["data"]["version"].endswith(".dir")
    assert card["classes"] == sorted(CLASSES) and card["metrics"]["test_images"] == 15
    markdown = (project / "models" / "card.md").read_text()
    assert "## Intended use" in markdown and markdown_text(audited["data/demo"]) in markdown
    assert "## Serving" in markdown and any("40,000,000 pixels" in line for line in card["served_refusals"])

    second = run(["dvc", "repro"], project)  # changes nothing, so the shared project stays as it was
    assert ran_stages(second.stdout) == []


@pytest.mark.train
def test_a_params_change_reruns_only_evaluate_and_dvc_shows_metrics_and_plots(reproduced, tmp_path):
    project = copy_project(reproduced.folder, tmp_path / "project")
    params = pipeline_params()
    params["evaluate"]["batch_size"] = 7
    write_params(project, params)
    third = run(["dvc", "repro"], project)
    assert ran_stages(third.stdout) == ["evaluate"]

    shown = json.loads(run(["dvc", "metrics", "show", "--json"], project).stdout)
    files = next(iter(shown.values()))["data"]
    assert set(files) == {"metrics/eval.json"}  # the headline; the other stages' numbers are outputs beside it

    plots = run(["dvc", "plots", "show", "--out", str(tmp_path / "plots")], project)
    html = (tmp_path / "plots" / "index.html").read_text()
    assert "Confusion matrix (test split" in html and "Loss (training and validation splits)" in html, plots.stdout


@pytest.mark.train
def test_an_experiment_reruns_what_the_epochs_reach(reproduced, experimented):
    # Experiments: `dvc exp run -S` needs the results committed as a baseline (the fixture does).
    # label_review does not depend on epochs; the card does (its training table lists them).
    assert ran_stages(experimented.output) == ["train", "evaluate", "export", "card", "report"]
    assert json.loads((reproduced.folder / "dvclive" / "metrics.json").read_text())["step"] == 1
    assert json.loads((experimented.folder / "dvclive" / "metrics.json").read_text())["step"] == 0
    assert yaml.safe_load((experimented.folder / "params.yaml").read_text())["train"]["epochs"] == 1


def test_undecodable_file_stops_repro_at_audit_and_is_named(tmp_path):
    params = tiny_params()
    params["demo"]["inject_corrupt"] = True
    project = make_project(tmp_path, params)
    result = run(["dvc", "repro"], project, check=False)
    assert result.returncode != 0
    assert "circle/injected_truncated.jpg" in result.stdout
    assert "truncated" in result.stdout
    assert ran_stages(result.stdout) == ["demo_data", "audit"]
    assert not (project / "models" / "model.keras").exists()


def test_a_params_typo_is_a_params_error_naming_the_key_and_the_stage_that_reads_it(tmp_path):
    params = tiny_params()
    params["train"]["learning_rat"] = params["train"].pop("learning_rate")
    project = make_project(tmp_path, params)
    result = run(["dvc", "repro"], project, check=False)
    said = result.stdout + result.stderr
    assert result.returncode != 0 and "Running stage 'versions'" in said and ran_stages(said) == []
    assert "unknown key 'train.learning_rat'; did you mean 'learning_rate'? allowed here: " in said
    assert "so no stage runs" in said and "read by train (then card, report)" in said
    assert "exited with 2" in said  # a params error (2), not an internal one (3)


def test_quarantined_file_never_reaches_training_when_policy_allows_it(tmp_path):
    params = tiny_params()
    params["demo"]["inject_corrupt"] = True
    params["audit"]["fail_on"] = []  # report and quarantine, but let the pipeline go on
    project = make_project(tmp_path, params)
    run(["dvc", "repro", "build"], project)
    quarantine = (project / "data" / "audit" / "quarantine.csv").read_text()
    assert "circle/injected_truncated.jpg" in quarantine
    for split in ("train", "val", "test"):
        assert "injected_truncated" not in (project / "data" / "splits" / f"{split}.csv").read_text()
    manifest = json.loads((project / "data" / "cache" / "manifest.json").read_text())
    assert sum(entry["count"] for entry in manifest["splits"].values()) == 60


@pytest.mark.train
def test_shipped_params_reach_the_accuracy_bar_and_pass_the_gate(tmp_path):
    """The README's promise: `dvc repro` on the embedded demo set gives test accuracy >= 0.95, and the
    shipped gate passes on it (exports within their bars included)."""
    project = make_project(tmp_path, yaml.safe_load((REPO_ROOT / "params.yaml").read_text()))
    run(["dvc", "repro"], project)
    evaluation = json.loads((project / "metrics" / "eval.json").read_text())
    assert evaluation["test_images"] == 450  # 15% of 5 x 600, every one evaluated
    assert evaluation["accuracy"] >= 0.95
    gate = run(["trainwell", "gate", "--format", "json"], project, check=False)
    rows = json.loads(gate.stdout)
    assert gate.returncode == 0 and all(row["passed"] for row in rows), rows
    split_sizes = json.loads((project / "metrics" / "split.json").read_text())
    assert split_sizes["training"] == 2100 and split_sizes["validation"] == 450
    labels = json.loads((project / "metrics" / "labels.json").read_text())
    assert labels["files_reviewed"] == 3000 and labels["out_of_fold_accuracy"] > 0.9


def test_a_queued_experiment_reuses_the_audit_cache_of_the_project(tmp_path):
    # DVC runs a queued experiment in a fresh clone under .dvc/tmp/exps/, holding only what git and
    # DVC track; the audit cache is neither, yet the experiment must find the project's.
    project = make_project(tmp_path, tiny_params())
    run(["dvc", "repro", "audit"], project)
    cache = Path(yaml.safe_load((project / "params.yaml").read_text())["paths"]["audit_cache"])
    assert (project / cache).is_file()
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-q", "-m", "audited"], project)
    # A dataset-level threshold: the audit re-runs, while every file's cached checks still hold.
    run(["dvc", "exp", "run", "--queue", "audit", "-S", "audit.max_class_imbalance=9", "--name", "queued"], project)
    run(["dvc", "exp", "run", "--run-all"], project)
    log = run(["dvc", "queue", "logs", "queued"], project).stdout
    files = 5 * 12
    assert f"0 decoded, {files} unchanged since the last audit" in log, log[-2000:]
    assert not list((project / ".dvc" / "tmp" / "exps").rglob(cache.name))  # none left in a temporary workspace
