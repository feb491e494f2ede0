"""Every writer refuses an input of its run, a dataset file, a link and a place reached through a link out of the project."""

from __future__ import annotations

import os
import shutil
from importlib import resources
from pathlib import Path

import pytest
import yaml

from tests import faults
from tests.helpers import snapshot, tiny_params, write_params
from trainwell.cli import main
from trainwell.errors import UsageError
from trainwell.outputs import guarded, protect_inputs, write_bytes_atomically


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder (the current one) with inputs, a dataset, links in and out, and a folder outside it."""
    root = tmp_path / "project"
    (root / "models").mkdir(parents=True)
    (root / "models" / "model.keras").write_bytes(b"model bytes")
    (root / "params.yaml").write_text("{}\n")
    (root / "list.csv").write_text("path\nc1/a1.png\n")
    faults.write(root / "data" / "raw" / "c1" / "a1.png", faults.png_bytes())
    os.link(root / "models" / "model.keras", root / "hard-link-to-model")
    (root / "alias").symlink_to("models")  # a link inside the project, to an input's folder
    (root / "dataset-alias").symlink_to(Path("data") / "raw")
    (root / "model-link.keras").symlink_to(Path("models") / "model.keras")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "theirs.txt").write_text("not the project's\n")
    (root / "out-link").symlink_to(tmp_path / "outside")
    (root / "file-link.csv").symlink_to(tmp_path / "outside" / "theirs.txt")
    os.mkfifo(root / "fifo")
    monkeypatch.chdir(root)
    return root


def spellings(path: str, project: Path) -> list[str]:
    """The same place written several ways: relative, ./, absolute, through .., with doubled slashes."""
    parent, name = os.path.split(path)
    forms = [path, f"./{path}", str(project / path), path.replace("/", "//")]
    if parent:
        forms.append(f"{parent}/../{os.path.basename(parent)}/{name}")
    return forms


REFUSED = {
    # An input, by any name: the hard link and the links are the same file.
    "input": ["models/model.keras", "params.yaml", "list.csv", "hard-link-to-model", "alias/model.keras"],
    # Anything at or under the dataset, existing or new, by any name.
    "dataset": ["data/raw/c1/a1.png", "data/raw/c1/new.html", "data/raw/new.csv", "dataset-alias/c1/a1.png"],
    # A link itself (it would be replaced), through a link out of the project, and what is not a regular file.
    "link": ["model-link.keras", "file-link.csv"],
    "link out": ["out-link/x.csv", "out-link/deeper/x.csv", "out-link/theirs.txt"],
    "special": ["fifo", "models", "data"],
}


@pytest.mark.parametrize("kind", sorted(REFUSED))
def test_every_writer_refuses_inputs_datasets_and_links_however_they_are_named(project, tmp_path, kind):
    before, outside = snapshot(project), snapshot(tmp_path / "outside")

    @guarded
    def run(target: str) -> None:
        protect_inputs(inputs=["models/model.keras", "params.yaml", "list.csv"], datasets=["data/raw"])
        write_bytes_atomically(target, b"written by trainwell\n")

    targets = [form for path in REFUSED[kind] for form in spellings(path, project)]
    for target in targets:
        with pytest.raises(UsageError, match="trainwell will not write"):
            run(target)
    assert snapshot(project) == before and snapshot(tmp_path / "outside") == outside
    assert not list(project.rglob("*.tmp")) and (project / "model-link.keras").is_symlink()


def test_what_a_run_may_write_it_writes(project, tmp_path):
    @guarded
    def run(target: str) -> None:
        protect_inputs(inputs=["models/model.keras", "params.yaml"], datasets=["data/raw"])
        write_bytes_atomically(target, b"ok\n")

    # New files in the project, a link inside the project to a folder that is not an input, and a
    # place outside the project named as itself.
    (project / "reports").mkdir()
    (project / "reports-alias").symlink_to("reports")
    for target in ("reports/new.csv", "data/other.csv", "reports-alias/page.html", str(tmp_path / "outside" / "ok.csv")):
        run(target)
        assert Path(target).read_bytes() == b"ok\n"


def test_predict_never_writes_over_its_manifest_model_or_images(predict_project, tmp_path, monkeypatch, capsys):
    """`predict --manifest list.csv -o list.csv` and `-o` the model once replaced them with CSV, exit 0."""
    folder = tmp_path / "project"
    shutil.copytree(predict_project, folder)
    monkeypatch.chdir(folder)
    faults.write(folder / "images" / "a.png", faults.png_bytes())
    os.link(folder / "images" / "a.png", folder / "same-image.png")
    (folder / "list.csv").write_text("path\nimages/a.png\n")
    (tmp_path / "outside").mkdir()
    (folder / "out-link").symlink_to(tmp_path / "outside")
    before = snapshot(folder)
    cases = [["--manifest", "list.csv", "-o", "list.csv"], ["images/a.png", "-o", "models/model.keras"],
             ["images/a.png", "-o", "params.yaml"], ["images/a.png", "-o", "same-image.png"],
             ["images/a.png", "-o", "data/splits/classes.json"], ["images/a.png", "-o", "out-link/p.csv"],
             ["images", "-o", "./images/../images/a.png"]]
    for arguments in cases:
        assert main(["predict", *arguments]) == 2, arguments
        err = capsys.readouterr().err
        assert "will not write --output" in err and "internal error" not in err, err
    assert snapshot(folder) == before and list((tmp_path / "outside").iterdir()) == []


def test_audit_page_never_lands_on_the_dataset_an_input_or_a_link(demo_copy, workdir, tmp_path_factory, capsys):
    """`trainwell audit DIR --html DIR/c1/a1.png` once overwrote a dataset image with HTML, and replaced a link."""
    image = next((demo_copy / "circle").glob("*.jpg"))
    elsewhere = tmp_path_factory.mktemp("outside")  # outside the project (workdir)
    (workdir / "out-link").symlink_to(elsewhere)
    (workdir / "page-link.html").symlink_to(elsewhere / "page.html")
    before, outside = snapshot(workdir), snapshot(elsewhere)
    for html in (str(image), str(demo_copy / "circle" / "new.html"), "params.yaml", "page-link.html",
                 "out-link/page.html", str(demo_copy)):
        assert main(["audit", str(demo_copy), "--html", html]) == 2, html
        err = capsys.readouterr().err
        assert "will not write --html" in err, err
    for cache in ("params.yaml", "out-link/cache.json", str(image)):  # the audit cache too
        assert main(["audit", str(demo_copy), "--cache", cache]) == 2, cache
        assert "will not write --cache" in capsys.readouterr().err
    assert main(["plots", "--out", "out-link/plots"]) == 2  # before asking DVC anything
    assert "will not write --out" in capsys.readouterr().err
    assert snapshot(workdir) == before and snapshot(elsewhere) == outside
    assert main(["audit", str(demo_copy), "--html", "page.html"]) == 0  # a new file is fine
    assert (workdir / "page.html").read_text().startswith("<!doctype html>")


@pytest.mark.parametrize("stage", ["versions", "split", "report"])
def test_a_stage_whose_outputs_name_its_inputs_refuses_before_any_work(demo_copy, workdir, capsys, stage):
    """Every output the pipeline gives a stage, pointed in turn at a dataset file, at one of its inputs
    (params.yaml) and through a link out of the project: exit 2 before the stage writes anything."""
    outs = yaml.safe_load(resources.files("trainwell").joinpath("templates", "dvc.yaml.in").read_text())["stages"][stage]
    keys = sorted({key for entry in outs.get("outs", []) + outs.get("metrics", [])
                   for key in [str(next(iter(entry)) if isinstance(entry, dict) else entry)]
                   if key.startswith("${paths.") and key.endswith("}")})
    image = str(next((demo_copy / "circle").glob("*.jpg")))
    (workdir / "out-link").symlink_to(workdir.parent)
    assert keys
    for key in keys:
        for target in (image, "params.yaml", "out-link/elsewhere.json"):
            params = tiny_params()
            params["paths"][key[len("${paths."):-1]] = target
            write_params(workdir, params)
            before = snapshot(workdir)
            assert main([stage.replace("_", "-")]) == 2, (key, target)
            assert f"will not write {key[2:-1]} =" in capsys.readouterr().err
            assert snapshot(workdir) == before


def test_training_backup_folder_keeps_files_that_are_not_the_backups(tmp_path):
    """paths.train_backup_dir may name a folder holding other files: only the backup's own go."""
    from trainwell.training.backup import BACKUP_META, BACKUP_STATE, remove_backup

    folder = tmp_path / "backup"
    folder.mkdir()
    for name in (BACKUP_STATE, BACKUP_META, "notes.txt"):
        (folder / name).write_text(name)
    remove_backup(folder)
    assert sorted(path.name for path in folder.iterdir()) == ["notes.txt"]
    (folder / "notes.txt").unlink()
    remove_backup(folder)
    assert not folder.exists()

