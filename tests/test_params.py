"""params.yaml validation: defaults, the shipped file, and errors that name the bad key.

The hostile-input tests generate their files (alias bombs, non-UTF-8 bytes, .inf, booleans, ...)
and find the float and int fields by walking the models, so a new field is covered automatically.
"""

from __future__ import annotations

import math
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeGuard, get_args, get_origin

import pytest
import yaml
from pydantic import BaseModel

from trainwell.errors import ParamsError
from trainwell.params import MAX_PROBLEMS, Params, load_params, parse_params

Place = Callable[[Any], dict]


def _is_model(annotation: Any) -> TypeGuard[type[BaseModel]]:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _leaf_fields(
    model: type[BaseModel], place: Place = lambda raw: raw, prefix: str = ""
) -> Iterator[tuple[str, Any, Place]]:
    """(dotted key, annotation, function putting a value at that key in a params mapping) for every
    field that is not itself a model; reaches into sections, sub-models and lists of models."""
    for name, field in model.model_fields.items():
        annotation = field.annotation

        def here(value: Any, name: str = name, place: Place = place) -> dict:
            return place({name: value})

        if _is_model(annotation):
            yield from _leaf_fields(annotation, here, f"{prefix}{name}.")
        elif get_origin(annotation) is list and _is_model(get_args(annotation)[0]):
            item = get_args(annotation)[0]
            # Required fields of list items (GateCheck.metric, AugmentStep.name) are strings.
            required = {key: "x" for key, info in item.model_fields.items() if info.is_required()}

            def first_item(value: dict, here: Place = here, required: dict = required) -> dict:
                return here([{**required, **value}])

            yield from _leaf_fields(item, first_item, f"{prefix}{name}.0.")
        else:
            yield f"{prefix}{name}", annotation, here


def _leaf_types(annotation: Any) -> set[Any]:
    args = get_args(annotation)
    return set().union(*map(_leaf_types, args)) if args else {annotation}


def _fields_of(kind: type) -> list[Any]:
    """pytest params (id: the dotted key) for every field holding numbers of `kind` (also optional or listed)."""
    found = []
    for key, annotation, place in _leaf_fields(Params):
        if kind in _leaf_types(annotation) and bool not in _leaf_types(annotation):
            is_list = get_origin(annotation) is list
            found.append(pytest.param(key, place, is_list, id=key))
    return found


FLOAT_FIELDS = _fields_of(float)
NUMBER_FIELDS = _fields_of(int) + FLOAT_FIELDS


def _write(folder: Path, content: str | bytes | dict) -> Path:
    """A params.yaml in `folder`: raw bytes, YAML text, or a mapping dumped as YAML (floats as .inf/.nan)."""
    path = folder / "params.yaml"
    if isinstance(content, dict):
        content = yaml.safe_dump(content)
    if isinstance(content, str):
        content = content.encode()
    path.write_bytes(content)
    return path


def _error(path: Path) -> str:
    """load_params' ParamsError message (any other exception fails the test)."""
    with pytest.raises(ParamsError) as error:
        load_params(path)
    return str(error.value)


def _alias_bomb(levels: int = 9, width: int = 9) -> str:
    """Nested aliases that expand to width**levels values: under 1 kB of YAML."""
    lines = [f"l0: &l0 [{', '.join(['x'] * width)}]"]
    lines += [f"l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * width)}]" for n in range(1, levels)]
    return "\n".join(lines) + f"\ntrain: {{conv_filters: *l{levels - 1}}}\n"


def _mapping_bomb(levels: int = 9, width: int = 9) -> str:
    lines = [f"m0: &m0 {{{', '.join(f'k{i}: x' for i in range(width))}}}"]
    lines += [f"m{n}: &m{n} {{{', '.join(f'k{i}: *m{n - 1}' for i in range(width))}}}" for n in range(1, levels)]
    return "\n".join(lines) + f"\ntrain: {{augment: [{{name: x, params: *m{levels - 1}}}]}}\n"


# Runs in a child process capped at 1.5 GB of address space: a regression fails there, fast,
# instead of taking the test machine's memory.
BOMB_CHILD = """
import resource, sys
soft, hard = resource.getrlimit(resource.RLIMIT_AS)
cap = 1_500_000_000 if hard == resource.RLIM_INFINITY else min(hard, 1_500_000_000)
resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
from trainwell.errors import ParamsError
from trainwell.params import load_params
try:
    load_params(sys.argv[1])
except ParamsError as error:
    print(error)
else:
    sys.exit("the alias bomb loaded without an error")
"""


def test_unknown_key_is_named_with_allowed_keys():
    with pytest.raises(ParamsError) as error:
        parse_params({"train": {"learning_rat": 0.1}})
    message = str(error.value)
    assert "train.learning_rat" in message
    assert "learning_rate" in message  # the allowed keys are listed


def test_unknown_section_is_named():
    with pytest.raises(ParamsError, match="unknown key 'trian'; did you mean 'train'"):
        parse_params({"trian": {}})


@pytest.mark.parametrize(("typo", "meant"), [("train.lerning_rate", "learning_rate"), ("train.epoch", "epochs"),
                                             ("data.image-size", "image_size"), ("audit.failon", "fail_on"),
                                             ("export.tie_marign", "tie_margin"), ("train.guard.spike_factr", "spike_factor")])
def test_a_typo_gets_a_did_you_mean(typo, meant):
    *sections, key = typo.split(".")
    raw: dict = {key: 1}
    for section in reversed(sections):
        raw = {section: raw}
    with pytest.raises(ParamsError) as error:
        parse_params(raw)
    assert f"did you mean '{meant}'?" in str(error.value)


def test_a_key_like_no_other_gets_no_guess():
    with pytest.raises(ParamsError) as error:
        parse_params({"train": {"zzzzqqq": 1}})
    assert "did you mean" not in str(error.value) and "allowed here: epochs" in str(error.value)


def test_mistyped_value_is_named():
    with pytest.raises(ParamsError) as error:
        parse_params({"train": {"epochs": "many"}})
    assert "train.epochs" in str(error.value)


@pytest.mark.parametrize("section", ["demo", "split", "build", "train", "label_review"])
@pytest.mark.parametrize("value", [-1, 2**32])
def test_a_seed_numpy_would_refuse_is_named(section, value):
    """A negative seed, or one past 2**32 - 1, raised inside numpy mid-stage (a traceback); every
    seed is checked here instead, naming its key, and the largest one numpy takes is accepted."""
    with pytest.raises(ParamsError) as error:
        parse_params({section: {"seed": value}})
    assert f"{section}.seed" in str(error.value)
    assert getattr(parse_params({section: {"seed": 2**32 - 1}}), section).seed == 2**32 - 1


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


def test_unknown_key_inside_a_list_item_lists_allowed_keys():
    # The key lookup used to step into the list index and raise KeyError instead.
    with pytest.raises(ParamsError) as error:
        parse_params({"gate": {"checks": [{"metric": "metrics/eval.json:accuracy", "mni": 0.9}]}})
    assert "gate.checks.0.mni" in str(error.value)
    assert "max_drop" in str(error.value)


def test_introspection_finds_float_and_int_fields_in_every_section():
    floats = {param.id for param in FLOAT_FIELDS}
    numbers = {param.id for param in NUMBER_FIELDS}
    assert {
        "train.learning_rate",
        "train.guard.lr_factor",
        "split.val_fraction",
        "audit.dark_below",
        "label_review.learning_rate",
        "gate.checks.0.min",
    } <= floats
    assert {"train.epochs", "train.conv_filters", "train.augment_processes", "demo.seed", "build.workers"} <= numbers
    assert "train.resume" not in numbers and "train.augment.0.params" not in numbers


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan], ids=["inf", "-inf", "nan"])
@pytest.mark.parametrize(("key", "place", "is_list"), FLOAT_FIELDS)
def test_non_finite_float_is_rejected_naming_the_key(tmp_path, key, place, is_list, value):
    message = _error(_write(tmp_path, place([value] if is_list else value)))
    assert f"'{key}'" in message
    assert "finite" in message


@pytest.mark.parametrize("value", [True, False])
@pytest.mark.parametrize(("key", "place", "is_list"), NUMBER_FIELDS)
def test_boolean_where_a_number_is_expected_is_rejected(tmp_path, key, place, is_list, value):
    message = _error(_write(tmp_path, place([value] if is_list else value)))
    assert f"'{key}'" in message
    assert "must be a number" in message


def test_numbers_are_read_as_users_expect(tmp_path):
    # An int for a float field is fine, and PyYAML reads 1e-4 (no dot) as a string: still accepted.
    path = _write(tmp_path, "train: {learning_rate: 1e-4, epochs: 3}\nlabel_review: {learning_rate: 1}\n")
    params = load_params(path)
    assert params.train.learning_rate == pytest.approx(1e-4)
    assert params.label_review.learning_rate == 1.0
    assert params.train.epochs == 3


@pytest.mark.parametrize("section", ["data", "demo"])
def test_duplicate_classes_are_named(tmp_path, section):
    message = _error(_write(tmp_path, {section: {"classes": ["a", "a", "b", "c", "c"]}}))
    assert f"'{section}.classes'" in message
    assert "['a', 'c']" in message


@pytest.mark.parametrize("filters", [[0], [-3], [16, 0, 32]])
def test_conv_filters_must_be_positive(tmp_path, filters):
    message = _error(_write(tmp_path, {"train": {"conv_filters": filters}}))
    assert "'train.conv_filters." in message
    assert "greater than or equal to 1" in message


def test_no_conv_blocks_is_a_valid_model(tmp_path):
    params = load_params(
        _write(tmp_path, {"train": {"conv_filters": [], "kernel_size": 50}, "data": {"image_size": 8}})
    )
    assert params.train.conv_filters == []


@pytest.mark.parametrize(
    ("image_size", "filters", "kernel", "advice"),
    [
        # 8 -> conv 7 -> pool 3 -> conv 2 -> pool 1 -> conv 0: the defaults need image_size >= 10.
        (8, [16, 16, 32], 2, "the largest kernel that fits is 1"),
        (16, [16, 16, 32], 3, "the largest kernel that fits is 2"),
        (75, [16, 16, 32], 11, "the largest kernel that fits is 10"),
        (75, [16], 80, "the largest kernel that fits is 74"),
        (8, [8, 8, 8, 8], 1, "no kernel fits"),
    ],
)
def test_kernel_too_large_for_the_image_names_the_keys(tmp_path, image_size, filters, kernel, advice):
    raw = {"data": {"image_size": image_size}, "train": {"conv_filters": filters, "kernel_size": kernel}}
    message = _error(_write(tmp_path, raw))
    for key in ("train.kernel_size", "train.conv_filters", "data.image_size"):
        assert key in message
    assert advice in message


@pytest.mark.parametrize(
    ("image_size", "filters", "kernel"), [(75, [16, 16, 32], 10), (75, [16], 74), (16, [16, 16, 32], 2)]
)
def test_largest_fitting_kernel_is_accepted(tmp_path, image_size, filters, kernel):
    raw = {"data": {"image_size": image_size}, "train": {"conv_filters": filters, "kernel_size": kernel}}
    assert load_params(_write(tmp_path, raw)).train.kernel_size == kernel


@pytest.mark.parametrize(
    "bomb",
    [_alias_bomb(), _mapping_bomb(), "train: &t {conv_filters: [*t]}\n"],
    ids=["sequence", "mapping", "recursive"],
)
def test_alias_bomb_is_refused_fast_in_little_memory_with_a_short_message(tmp_path, bomb):
    path = _write(tmp_path, bomb)
    assert path.stat().st_size < 1000
    started = time.monotonic()
    child = subprocess.run([sys.executable, "-c", BOMB_CHILD, str(path)], capture_output=True, text=True, timeout=120)
    assert child.returncode == 0, child.stderr[-2000:]
    assert time.monotonic() - started < 30
    assert str(path) in child.stdout
    assert "refused" in child.stdout
    assert len(child.stdout) < 2000


def test_ordinary_aliases_still_work(tmp_path):
    path = _write(
        tmp_path,
        "demo: {image_size: &size 32, classes: &classes [a, b]}\ndata: {image_size: *size, classes: *classes}\n",
    )
    assert load_params(path).data.image_size == 32


@pytest.mark.parametrize(
    "content", [b"\xff\xfe\x00bad", "train: {seed: 1}  # caf\xe9\n".encode("latin-1")], ids=["utf16-bom", "latin-1"]
)
def test_non_utf8_file_is_named(tmp_path, content):
    path = _write(tmp_path, content)
    message = _error(path)
    assert str(path) in message
    assert "UTF-8 YAML" in message


def test_directory_is_a_params_error(tmp_path):
    message = _error(tmp_path)
    assert str(tmp_path) in message
    assert "directory" in message


def test_oversized_file_is_refused(tmp_path):
    message = _error(_write(tmp_path, "# padding\n" * 200_000))
    assert "larger than" in message


@pytest.mark.parametrize(
    "text",
    [
        "train: [unclosed " + "x" * 100_000,
        "train: {seed: '" + "x" * 100_000 + "}\n",
        "train:\n\tseed: 1\n",
        "train: " + "[" * 100_000,
    ],
    ids=["unclosed-long", "unterminated-quote", "tab", "deep"],
)
def test_broken_yaml_gives_one_short_line(tmp_path, text):
    message = _error(_write(tmp_path, text))
    assert str(tmp_path) in message
    assert "\n" not in message
    assert len(message) < 1000


@pytest.mark.parametrize(
    "text",
    [
        "train: {resume: !!bool maybe}",
        "train: {seed: 2001-13-45}",
        "train: {seed: !!timestamp soon}",
        "train: {seed: !!float many}",
        "train: {seed: " + "9" * 5000 + "}",
    ],
    ids=["bool", "date", "timestamp", "float", "huge-int"],
)
def test_values_pyyaml_cannot_build_are_params_errors(tmp_path, text):
    message = _error(_write(tmp_path, text))
    assert "not valid YAML: line 1" in message
    assert len(message) < 1000


def test_long_input_is_echoed_capped(tmp_path):
    message = _error(_write(tmp_path, {"train": {"output_activation": "x" * 100_000}}))
    assert "train.output_activation" in message
    assert len(message) < 1000


def test_many_problems_are_listed_capped(tmp_path):
    message = _error(_write(tmp_path, {"train": {"conv_filters": ["many"] * 5000}}))
    assert message.count("train.conv_filters.") == MAX_PROBLEMS
    assert f"and {5000 - MAX_PROBLEMS} more problems" in message
    assert len(message) < 3000


# Thresholds a metric is compared with: any finite number is a meaningful bar, and nothing is
# allocated or waited for by its size. Every other number has an upper bound.
COMPARED_ONLY = {"gate.checks.0.min", "gate.checks.0.max", "gate.checks.0.max_drop", "gate.checks.0.max_rise"}
HUGE = 10**30  # past every bound, an int or a float


@pytest.mark.parametrize(("key", "place", "is_list"), [field for field in NUMBER_FIELDS if field.id not in COMPARED_ONLY])
def test_every_size_and_count_has_an_upper_bound_named_in_the_message(tmp_path, key, place, is_list):
    """A value past any machine's reach is a params error naming the key and its bound (exit 2), not
    a traceback mid-stage: `train.dense_units: 2147483648` ended in ResourceExhaustedError (exit 3)."""
    message = _error(_write(tmp_path, place([HUGE] if is_list else HUGE)))
    assert f"'{key}{'.0' if is_list else ''}'" in message and "less than" in message, message


def test_the_bounds_are_the_shipped_params_ceilings():
    """The limits are not so tight that the shipped defaults or a large real run hit them."""
    parse_params({"data": {"image_size": 224}, "train": {"model": "EfficientNetV2B3", "batch_size": 32},
                  "label_review": {"batch_size": 32}, "evaluate": {"batch_size": 64}, "predict": {"batch_size": 64},
                  "audit": {"max_pixels": 200_000_000, "file_timeout_s": 3600}, "build": {"shard_size": 8192}})
    parse_params({"data": {"image_size": 128}, "train": {"conv_filters": [64, 128, 256], "dense_units": 4096,
                                                        "batch_size": 256}})


@pytest.mark.parametrize("seed", range(20))
def test_sizes_that_multiply_are_bounded_together_by_the_memory_they_take(seed):
    """Generated networks: refused exactly when the estimate passes 16 GiB, naming the keys to lower."""
    from trainwell.params_limits import GIB, NETWORK_BYTES, cnn_size

    rng = __import__("random").Random(seed)
    size = rng.choice([16, 32, 75, 128, 256, 512, 1024])
    filters = [rng.choice([1, 8, 64, 512, 4096]) for _ in range(rng.randrange(0, 4))]
    raw = {"data": {"image_size": size}, "train": {"conv_filters": filters, "kernel_size": 1,
                                                    "dense_units": rng.choice([1, 128, 4096, 65536]),
                                                    "batch_size": rng.choice([1, 32, 1024, 65536])},
           "build": {"shard_size": 64}, "export": {"representative_images": 64}}  # held images: tested below
    estimate = cnn_size(image_size=size, conv_filters=filters, kernel_size=1, dense_units=raw["train"]["dense_units"],
                        classes=2)
    batches = [raw["train"]["batch_size"], Params().label_review.batch_size]  # its fold models are the same network
    needed = max(max(estimate.training_bytes(batch) for batch in batches), estimate.inference_bytes(256))
    if needed <= NETWORK_BYTES:
        assert parse_params(raw).train.conv_filters == filters
        return
    with pytest.raises(ParamsError) as refused:
        parse_params(raw)
    message = str(refused.value)
    assert f"{needed / GIB:,.1f} GiB" in message and "train.dense_units, train.conv_filters, data.image_size" in message


def test_the_estimate_counts_the_parameters_keras_builds():
    from trainwell.params_limits import cnn_size
    from trainwell.training.network import build_model

    for size, filters, kernel, units, classes in ((32, [4], 3, 8, 5), (75, [16, 16, 32], 2, 128, 3), (20, [], 1, 7, 2)):
        model = build_model(num_classes=classes, image_size=size, conv_filters=filters, kernel_size=kernel,
                            dense_units=units)
        assert cnn_size(image_size=size, conv_filters=filters, kernel_size=kernel, dense_units=units,
                        classes=classes).parameters == model.count_params()


def test_a_class_count_the_head_cannot_hold_is_refused_before_building(tmp_path):
    from trainwell.training.network import model_for

    with pytest.raises(ParamsError, match="with 1,000,000 classes"):
        model_for(Params().train.model_copy(update={"dense_units": 65536}), num_classes=1_000_000, image_size=75)


@pytest.mark.parametrize("override", ["train.dense_units=2147483648", "train.conv_filters=[2147483648]",
                                      "audit.file_timeout_s=1e10", "train.dense_units=2500000"])
def test_the_command_line_exits_2_naming_the_key_and_bound(tmp_path, override, capsys, monkeypatch):
    from trainwell.cli import main

    section, rest = override.split(".", 1)
    key, value = rest.split("=")
    (tmp_path / "params.yaml").write_text(f"{section}:\n  {key}: {value}\n")
    monkeypatch.chdir(tmp_path)
    assert main(["split"]) == 2
    error = capsys.readouterr().err
    assert f"{section}.{key}" in error and "less than or equal to" in error, error


@pytest.mark.parametrize(("image_size", "key", "count"), [(1024, "build.shard_size", 4096), (512, "build.shard_size", 5462),
                                                         (1024, "export.representative_images", 2000)])
def test_images_held_at_once_are_bounded_by_their_bytes(image_size, key, count):
    """A cache shard and the int8 calibration images are held whole: 4096 images of 1024x1024 are 12 GiB."""
    section, name = key.split(".")
    raw = {"data": {"image_size": image_size}, "train": {"conv_filters": [1], "dense_units": 1},
           "build": {"shard_size": 16}, "export": {"representative_images": 16}}
    raw[section][name] = count
    with pytest.raises(ParamsError) as refused:
        parse_params(raw)
    largest = (4 << 30) // (image_size * image_size * 3)
    assert f"lower {key} (at most {largest:,} at this data.image_size)" in str(refused.value)
    raw[section][name] = largest
    parse_params(raw)


@pytest.mark.parametrize(("raw", "readers"), [({"train": {"learning_rat": 0.1}}, "read by train (then card, report)"),
                                              ({"export": {"tie_marign": 0.1}}, "read by export."),
                                              ({"data": {"image-size": 32}}, "read by audit (then split, build, card)"),
                                              ({"trian": {}}, "read by no stage.")])
def test_the_versions_stage_says_a_typo_is_a_params_error_of_the_stages_that_read_it(tmp_path, capsys, raw, readers):
    from trainwell.cli import main

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    assert main(["versions", "--params", str(tmp_path / "params.yaml")]) == 2
    said = capsys.readouterr().err
    assert "is invalid, so no stage runs" in said and readers in said
    assert "did you mean" in said and "allowed here:" in said
    assert not (tmp_path / ".trainwell").exists()
