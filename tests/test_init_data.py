"""`trainwell init --data` reads the data: what it found and chose is said, the image size fits it, no demo stage."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.helpers import tool_env
from trainwell.cli import main
from trainwell.data.survey import SMALLEST_SIZE, choose_image_size, survey_folder
from trainwell.params import load_params


def git_repo(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "-q", str(folder)], check=True)
    return folder


def write_images(folder: Path, counts: dict[str, int], *, size: tuple[int, int], mode: str, fmt: str = "PNG") -> None:
    rng = np.random.default_rng(0)
    channels = {"L": (), "RGB": (3,), "RGBA": (4,)}[mode]
    for label, count in counts.items():
        (folder / label).mkdir(parents=True, exist_ok=True)
        for index in range(count):
            pixels = rng.integers(0, 256, (size[1], size[0], *channels), dtype=np.uint8)
            Image.fromarray(pixels, mode).save(folder / label / f"{index}.{fmt.lower()}", fmt)


def test_init_on_grayscale_28px_digits_says_what_it_found_and_sets_that_size(tmp_path, capsys):
    project = git_repo(tmp_path / "project")
    write_images(project / "digits", {"zero": 5, "one": 7, "two": 4}, size=(28, 28), mode="L")
    assert main(["init", str(project), "--data", str(project / "digits")]) == 0
    said = capsys.readouterr().out
    assert "16 files in 3 classes: one 7, two 4, zero 5" in said
    assert "28x28 (16)" in said and "16 grayscale, 0 colour" in said and "png 16" in said
    assert "data.image_size = 28: the data's native size" in said and "three equal channels" in said
    assert "dvc add" in said
    params = load_params(project / "params.yaml")
    assert params.data.image_size == 28 and params.data.dir == "digits"
    pipeline = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    assert "demo_data" not in pipeline and "audit" in pipeline  # no 5,000 unused demo images
    dag = subprocess.run(["dvc", "dag"], cwd=project, env=tool_env(), capture_output=True, text=True)
    assert dag.returncode == 0, dag.stderr  # DVC reads the pipeline without the stage


def test_tracked_data_is_not_told_to_dvc_add(tmp_path, capsys):
    project = git_repo(tmp_path / "project")
    write_images(project / "photos", {"cat": 3, "dog": 3}, size=(200, 150), mode="RGB", fmt="JPEG")
    (project / "photos.dvc").write_text("outs:\n- path: photos\n")
    assert main(["init", str(project), "--data", str(project / "photos")]) == 0
    said = capsys.readouterr().out
    assert "dvc add" not in said
    assert "data.image_size = 75: the largest size init chooses: the images' median shorter side is 150 px" in said
    assert load_params(project / "params.yaml").data.image_size == 75


@pytest.mark.parametrize(("side", "expected"), [(4, SMALLEST_SIZE), (15, SMALLEST_SIZE), (16, 16), (32, 32), (75, 75),
                                                (76, 75), (400, 75)])
def test_the_size_chosen_is_native_within_the_cnn_minimum_and_the_default(tmp_path, side, expected):
    write_images(tmp_path / "data", {"a": 1, "b": 1}, size=(side, side * 2), mode="RGB")
    size, reason = choose_image_size(survey_folder(tmp_path / "data", extensions=[".png"], max_pixels=10**8))
    assert size == expected and reason


def test_hostile_folders_are_surveyed_not_crashed_on(tmp_path, capsys):
    """Names that act on a terminal, files that are not images, a FIFO, a link out, an empty class."""
    project = git_repo(tmp_path / "project")
    data = project / "data"
    write_images(data, {"ok": 3, "bell\a\x1b[31mred": 2}, size=(40, 40), mode="RGBA")
    (data / "ok" / "not_an_image.png").write_bytes(b"hello")
    (data / "ok" / "truncated.png").write_bytes((data / "ok" / "0.png").read_bytes()[:30])
    (data / "ok" / "empty.jpg").write_bytes(b"")
    os.mkfifo(data / "ok" / "pipe.png")
    (tmp_path / "secret.png").write_bytes((data / "ok" / "0.png").read_bytes())
    (data / "ok" / "link.png").symlink_to(tmp_path / "secret.png")
    (data / "empty_class").mkdir()
    assert main(["init", str(project), "--data", str(data)]) == 0  # finishes: the audit judges the files
    said = capsys.readouterr().out
    assert "\x1b" not in said and "\a" not in said
    assert "headers could not be read" in said and "data.image_size = 40" in said
    assert "empty_class 0" in said


@pytest.mark.parametrize(("images", "expected"), [
    ({"median_side": 28, "headers": 50, "grey": 50}, ["enlarged to 75x75", "Every image it was trained on is grayscale"]),
    ({"median_side": 75, "headers": 9, "grey": 0}, ["native size, 75x75"]),
    ({"median_side": 400, "headers": 9, "grey": 3}, ["median shorter side is 400 pixels", "3 of 9 images sampled"]),
    (None, ["detail smaller than a pixel at that size"]),
])
def test_the_cards_limitations_come_from_the_datas_real_properties(images, expected):
    from trainwell.reports.card import limitations

    lines = " ".join(limitations(image_size=75, splits={}, label_review=None, audit={}, images=images))
    for phrase in expected:
        assert phrase in lines, lines
    if images and images["median_side"] < 75:
        assert "detail smaller than a pixel" not in lines  # the old sentence, odd for enlarged images


def test_the_card_stage_reads_the_data_it_describes(tmp_path, monkeypatch):
    from trainwell.params import Params
    from trainwell.stages.card import _image_properties

    write_images(tmp_path / "digits", {"a": 3, "b": 2}, size=(28, 28), mode="L")
    params = Params.model_validate({"data": {"dir": str(tmp_path / "digits")}})
    assert _image_properties(params) == {"median_side": 28, "headers": 5, "grey": 5}
    assert _image_properties(Params.model_validate({"data": {"dir": str(tmp_path / "missing")}})) is None
