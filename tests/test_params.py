"""params.yaml validation: defaults, the shipped file, and errors that name the bad key."""

from __future__ import annotations

import pytest

from tests.helpers import REPO_ROOT
from trainwell.errors import ParamsError
from trainwell.params import Params, load_params, parse_params


def test_shipped_params_file_is_valid_and_matches_defaults():
    shipped = load_params(REPO_ROOT / "params.yaml")
    # The defaults in code and the shipped file agree, so deleting a key changes nothing.
    assert shipped == Params()
    assert shipped.train.output_activation == "softmax"
    assert shipped.train.learning_rate == pytest.approx(1e-4)
    assert shipped.demo.images_per_class >= 400


def test_unknown_key_is_named_with_allowed_keys():
    with pytest.raises(ParamsError) as error:
        parse_params({"train": {"learning_rat": 0.1}})
    message = str(error.value)
    assert "train.learning_rat" in message
    assert "learning_rate" in message  # the allowed keys are listed


def test_unknown_section_is_named():
    with pytest.raises(ParamsError, match="unknown key 'trian'"):
        parse_params({"trian": {}})


def test_mistyped_value_is_named():
    with pytest.raises(ParamsError) as error:
        parse_params({"train": {"epochs": "many"}})
    assert "train.epochs" in str(error.value)


def test_literal_choice_lists_allowed_values():
    with pytest.raises(ParamsError) as error:
        parse_params({"train": {"output_activation": "tanh"}})
    assert "train.output_activation" in str(error.value)
    assert "softmax" in str(error.value)


def test_unknown_audit_kind_is_rejected():
    with pytest.raises(ParamsError, match=r"audit\.fail_on"):
        parse_params({"audit": {"fail_on": ["corupt"]}})


def test_split_fractions_must_leave_training_data():
    with pytest.raises(ParamsError, match="val_fraction"):
        parse_params({"split": {"val_fraction": 0.6, "test_fraction": 0.5}})


def test_invalid_yaml_is_a_params_error(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train: [unclosed")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(path)


def test_missing_file_means_defaults(tmp_path):
    assert load_params(tmp_path / "absent.yaml") == Params()
