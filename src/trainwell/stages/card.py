"""Stage `card`: the model card (Markdown and JSON) from the model, params, audit, split, evaluation, label review and export outputs."""

from __future__ import annotations

from pathlib import Path

import yaml

from trainwell import __version__, storage
from trainwell.console import say, shown
from trainwell.data.splits import CLASSES_FILE, COUNTS_FILE
from trainwell.errors import DataError
from trainwell.outputs import guard_stage, guarded, write_text_atomically
from trainwell.params import Params, load_params
from trainwell.reports.card import limitations, render_card_json, render_card_markdown
from trainwell.training.evaluation import PER_CLASS_JSON
from trainwell.training.served_limits import describe, served_limits

# The largest model file hashed for the card (bytes); the file is trainwell's own, bounded all the same.
MAX_MODEL_BYTES = 16 << 30

TRAINING_KEYS = ("model", "weights", "frozen_epochs", "fine_tune_learning_rate", "epochs", "batch_size", "learning_rate", "seed", "loss", "output_activation", "class_weight",
                 "augment", "augment_layers", "mixed_precision", "strategy")


def data_version(*, lock_file: str, data_dir: str) -> str | None:
    """DVC's hash of data.dir as dvc.lock records it for the audit stage (None outside `dvc repro`).

    DVC writes each stage's lock entry as soon as that stage has run, so by the time this stage
    runs the entry describes the data the model was trained on.
    """
    try:
        lock = yaml.safe_load(storage.read_regular_file(lock_file, max_bytes=storage.MAX_DOCUMENT_BYTES,
                                                        limit=storage.DOCUMENT_LIMIT).decode("utf-8"))
        deps = lock["stages"]["audit"]["deps"]
    except (OSError, ValueError, yaml.YAMLError, KeyError, TypeError):
        return None
    for entry in deps if isinstance(deps, list) else []:
        if isinstance(entry, dict) and str(entry.get("path", "")).rstrip("/") == data_dir.rstrip("/"):
            value = entry.get("md5")
            return str(value) if value else None
    return None


def _sha256(path: str) -> str:
    try:
        return storage.file_digest(path, max_bytes=MAX_MODEL_BYTES, limit="a model file may have").hex()
    except OSError as exc:
        raise DataError(f"the model '{path}' cannot be read: {exc.strerror or exc}") from None


def _network(params: Params) -> str:
    train = params.train
    if train.model == "cnn":
        return f"{len(train.conv_filters)} Conv2D blocks {train.conv_filters}, Dense {train.dense_units}, softmax head"
    start = "random weights" if train.weights == "none" else f"weights from {Path(train.weights).name}"
    return (f"keras.applications {train.model} ({start}; {train.frozen_epochs} epochs frozen, then fine-tuned), "
            f"global average pooling, dropout {train.head_dropout}, softmax head")


def _image_properties(params: Params) -> dict | None:
    """The data's median shorter side and how many images are grey, from up to 2,000 headers of a
    local class-folder dataset (None for a manifest or an object store: the card then says less)."""
    if params.data.manifest is not None or storage.is_remote(params.data.dir) or not Path(params.data.dir).is_dir():
        return None
    from trainwell.data.survey import survey_folder

    found = survey_folder(params.data.dir, extensions=params.data.extensions, max_pixels=params.audit.max_pixels)
    return {"median_side": found.median_side, "headers": found.read, "grey": found.grey} if found.read else None


def build_card(params: Params) -> dict:
    evaluation = storage.read_json_object_or_none(params.paths.eval_metrics)
    details = storage.read_json_object_or_none(str(Path(params.paths.eval_report_dir) / PER_CLASS_JSON)) or {}
    try:
        classes = storage.read_json(Path(params.paths.splits_dir) / CLASSES_FILE)
    except (OSError, ValueError):
        classes = None
    if evaluation is None or not isinstance(classes, list) or not Path(params.paths.model).is_file():
        raise DataError("the model card needs the model, the class list and the evaluation metrics; run "
                        "`dvc repro` (the card stage comes after train and evaluate)")
    splits = storage.read_json_object_or_none(str(Path(params.paths.splits_dir) / COUNTS_FILE)) or {}
    audit = storage.read_json_object_or_none(params.paths.audit_metrics) or {}
    label_review = storage.read_json_object_or_none(params.paths.label_metrics)
    train = params.train.model_dump(mode="json")
    size = params.data.image_size
    return {
        "trainwell_version": __version__,
        "intended_use": params.card.intended_use,
        "model": {"file": params.paths.model, "sha256": _sha256(params.paths.model),
                  "network": _network(params),
                  "input": f"{size}x{size}x3 uint8 RGB (decoded and resized by trainwell's `build`)"},
        "classes": [str(name) for name in classes],
        "data": {"dir": params.data.dir,
                 "version": data_version(lock_file="dvc.lock", data_dir=params.data.dir),
                 "splits": {name: entry for name, entry in splits.items() if isinstance(entry, dict)}},
        "audit": audit,
        "training": {key: train[key] for key in TRAINING_KEYS if key in train},
        # metrics/eval.json has the headline; the per-class table and macro precision/recall sit beside the plots.
        "metrics": {key: value for key, value in {**evaluation, **details}.items() if isinstance(value, (int, float))},
        "per_class": details.get("per_class", {}),
        "label_review": label_review,
        "label_review_file": f"{params.paths.label_report_dir}/suspects.csv",
        "export": storage.read_json_object_or_none(params.paths.export_metrics),
        # What the SavedModel's bytes signature refuses (the whole request, with an error naming the image).
        "served_refusals": describe(served_limits(params)),
        "limitations": limitations(image_size=size, splits=splits, label_review=label_review, audit=audit,
                                   images=_image_properties(params)),
    }


@guarded
def main(*, params_file: str = "params.yaml") -> int:
    params = load_params(params_file)
    guard_stage("card", params=params, params_file=params_file)
    card = build_card(params)
    write_text_atomically(params.paths.card_json, render_card_json(card))
    write_text_atomically(params.paths.card, render_card_markdown(card))
    say(f"card: wrote {shown(params.paths.card)} and {shown(params.paths.card_json)} "
        f"(data version {card['data']['version'] or 'not recorded outside dvc repro'})")
    return 0
