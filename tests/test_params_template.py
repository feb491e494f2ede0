"""params.yaml is written from the models: the checked-in copies are what the generator writes, and it writes the defaults."""

from __future__ import annotations

import shutil

import pytest
import yaml
from pydantic import Field

from tests.helpers import REPO_ROOT
from trainwell.params import Params, parse_params
from trainwell.params import template as generator
from trainwell.params.base import _Section
from trainwell.stages.init import render_params


@pytest.mark.parametrize("path", sorted(generator.targets(REPO_ROOT)), ids=lambda path: path.name)
def test_the_checked_in_params_files_are_what_the_models_write(path):
    expected = generator.targets(REPO_ROOT)[path]
    assert path.read_text(encoding="utf-8") == expected, (
        f"{path.relative_to(REPO_ROOT)} is not what the params models write: run `{generator.COMMAND}` "
        "(after changing a key in src/trainwell/params/), then commit both files")


def test_the_template_holds_exactly_the_defaults_with_init_s_placeholder():
    text = generator.render()
    assert text.count(generator.DATA_DIR_PLACEHOLDER) == 1
    raw = yaml.safe_load(text.replace(generator.DATA_DIR_PLACEHOLDER, Params().data.dir))  # PyYAML: YAML 1.1
    assert parse_params(raw) == Params()
    assert raw == generator._values(Params())  # nothing coerced on the way: 0.00001 is a float, `max: 0` an int


def test_init_writes_the_repository_params_yaml_for_the_demo():
    assert render_params(data_dir=Params().data.dir) == (REPO_ROOT / "params.yaml").read_text(encoding="utf-8")


def test_the_defaults_are_the_demo_s():
    defaults = Params()
    assert defaults.train.output_activation == "softmax"
    assert defaults.train.learning_rate == pytest.approx(1e-3)  # Keras' Adam default
    assert defaults.demo.images_per_class >= 400


def test_descriptions_and_comment_blocks_are_written_where_the_models_put_them():
    lines = generator.render().splitlines()
    described = [(name, field.description) for name, field in Params.model_fields.items() if field.description]
    for name, description in described:
        line = next(line for line in lines if line.startswith(f"{name}:"))
        assert line.endswith(f"# {description}") and line.index("#") == generator.COMMENT_COLUMN
    assert "  # Image properties are judged against the dataset and each file's class. Past the first bound a" in lines
    continued = lines.index("                                # warns and counts in metrics/export.json:bars_missed (gated)")
    assert lines[continued - 1].startswith("  min_agreement_float16: 0.999  # top-1 agreement")


def test_every_comment_is_aligned_and_leaves_the_value_alone():
    column = 0  # of the comment on the line before
    for line in generator.render().splitlines():
        code, hash_, _ = line.partition("# ")
        if code.strip():
            # In the column, or (a longer line) two spaces past it, never touching the value.
            assert len(code) == generator.COMMENT_COLUMN or code.endswith("  ") or not hash_, line
            assert yaml.safe_load(code) == yaml.safe_load(line), line
        elif hash_ and len(code) >= generator.COMMENT_COLUMN:  # a description's second line, under its first
            assert len(code) == column, line
        column = len(code) if hash_ else 0


def test_a_described_value_written_over_several_lines_is_refused(monkeypatch):
    class Long(_Section):
        text: str = Field("word " * 40, description="a comment that would end the folded string")

    class WithLong(Params):
        long: Long = Field(default_factory=Long)

    monkeypatch.setattr(generator, "Params", WithLong)
    with pytest.raises(ValueError, match="cannot carry a trailing comment"):
        generator.render()


def test_the_command_rewrites_stale_copies_and_names_them(tmp_path, capsys):
    for relative in (generator.TEMPLATE, "params.yaml"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO_ROOT / relative, tmp_path / relative)
    (tmp_path / "params.yaml").write_text("train:\n  epochs: 3\n")
    assert generator.main([str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {tmp_path / 'params.yaml'}"
    for path, text in generator.targets(tmp_path).items():
        assert path.read_text(encoding="utf-8") == text
    assert generator.main([str(tmp_path)]) == 0 and capsys.readouterr().out == ""  # nothing to do: nothing written
