"""The records passed between layers: a backup's meta read back only in the shape EpochBackup writes, the
split receipt and the train summary in the layout their files and messages had, the TF-internals fence."""

from __future__ import annotations

import importlib
import json
import os
import random
import sys

import pytest
import tensorflow as tf
from tensorflow.python.framework import config as tf_config

from trainwell.data.splits import SplitAssignment, split_receipt
from trainwell.errors import TrainwellError
from trainwell.training.backup import BACKUP_META, BACKUP_STATE, BackupMeta, read_backup
from trainwell.training.distribute import seed_everything
from trainwell.training.guard import incident_record

FINGERPRINT = "f" * 64


def _valid_meta() -> BackupMeta:
    incident = incident_record(epoch=0, step=3, kind="nan_loss", loss=float("nan"), snapshot_at=(0, 1),
                               old_rate=0.01, new_rate=0.005, files=["cats/a.png"])
    return BackupMeta(epoch=2, fingerprint=FINGERPRINT, incidents=[incident])


def _hostile_metas(count: int, seed: int = 0) -> list[bytes]:
    """Bytes a meta.json may hold after a crash, a disk error or a hand edit: not JSON, not UTF-8, other
    shapes, each key dropped or of another type, nesting past the parser, truncations at every length."""
    valid = _valid_meta()
    shaped: list[object] = [None, 7, "meta", [], [valid], {}, {"epoch": 2}]
    for key in valid:
        shaped.append({name: value for name, value in valid.items() if name != key})
        for wrong in (None, "2", 2.5, -1, True, [], {}, [1], ["x"]):
            if key != "incidents" or not isinstance(wrong, list) or wrong == [1]:
                shaped.append({**valid, key: wrong})
    texts = [json.dumps(entry).encode() for entry in shaped]
    texts += [b"", b"\xff\xfe", b"[" * 100_000, b"{\"epoch\": 1e999999}", b"{\"epoch\": " + b"9" * 5000 + b"}"]
    whole = json.dumps(valid).encode()
    rng = random.Random(seed)
    texts += [whole[:rng.randrange(len(whole))] for _ in range(count)]
    texts += [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64))) for _ in range(count)]
    return texts


def test_a_backup_meta_in_any_other_shape_is_ignored_with_a_warning_never_a_crash(tmp_path, capsys):
    (tmp_path / BACKUP_STATE).write_bytes(b"state")
    meta_file = tmp_path / BACKUP_META
    meta_file.write_text(json.dumps(_valid_meta()))
    assert read_backup(folder=tmp_path, fingerprint=FINGERPRINT) == _valid_meta()
    cases = _hostile_metas(count=150)
    for data in cases:
        meta_file.write_bytes(data)
        assert read_backup(folder=tmp_path, fingerprint=FINGERPRINT) is None, data[:80]
    assert capsys.readouterr().err.count("ignoring the backup") == len(cases)
    meta_file.unlink()
    os.mkfifo(meta_file)  # a FIFO in its place is refused without blocking
    assert read_backup(folder=tmp_path, fingerprint=FINGERPRINT) is None
    assert "cannot be read" in capsys.readouterr().err


def test_a_backup_of_another_run_is_ignored(tmp_path, capsys):
    (tmp_path / BACKUP_STATE).write_bytes(b"state")
    (tmp_path / BACKUP_META).write_text(json.dumps(_valid_meta()))
    assert read_backup(folder=tmp_path, fingerprint="0" * 64) is None
    assert "belongs to other params" in capsys.readouterr().err


def test_the_split_receipt_keeps_the_layout_counts_json_had():
    splits = {"train": [("a/1", "a"), ("b/1", "b"), ("a/2", "a")], "val": [("a/3", "a")], "test": [("b/2", "b")]}
    broken = [{"class": "a", "files": 11, "share": 0.5, "example": "a/9"}]
    receipt = split_receipt(SplitAssignment(splits, 2, broken), classes=["a", "b"], excluded=4)  # type: ignore[arg-type]
    assert json.dumps(receipt) == json.dumps({
        "files_excluded_by_audit": 4,
        "train": {"total": 3, "per_class": {"a": 2, "b": 1}},
        "val": {"total": 1, "per_class": {"a": 1, "b": 0}},
        "test": {"total": 1, "per_class": {"a": 0, "b": 1}},
        "groups_kept_together": 2,
        "groups_split_up": broken,
    })


def test_incident_records_keep_their_keys_and_order():
    incident = incident_record(epoch=1, step=4, kind="loss_spike", loss=float("inf"), snapshot_at=(1, 2),
                               old_rate=0.1, new_rate=0.05, files=["x.png"])
    assert list(incident) == ["epoch", "step", "kind", "loss", "action", "since_step", "files"]
    assert (incident["epoch"], incident["loss"], incident["since_step"]) == (2, "inf", 2)


def test_turning_op_determinism_off_goes_through_the_fenced_module():
    was_on = tf_config.is_op_determinism_enabled()
    try:
        seed_everything(0)
        assert tf_config.is_op_determinism_enabled()
        seed_everything(0, deterministic_ops=False)
        assert not tf_config.is_op_determinism_enabled()
    finally:
        (tf_config.enable_op_determinism if was_on else tf_config.disable_op_determinism)()


def test_the_tensorflow_internals_refuse_another_tensorflow_version(monkeypatch):
    monkeypatch.setattr(tf, "__version__", "2.99.0")
    monkeypatch.delitem(sys.modules, "trainwell.training.tensorflow_internals", raising=False)
    with pytest.raises(TrainwellError, match=r"not 2\.99\.0.*train\.jit_compile: false"):
        importlib.import_module("trainwell.training.tensorflow_internals")
