"""`trainwell predict`: the build stage's pixels, every bad input refused by path and kind, any name, manifests and s3://."""

from __future__ import annotations

import csv
import io
import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests import faults
from tests.fuzzing import corpus
from tests.helpers import CLASSES, tiny_params, trainwell_in_process, write_params
from tests.test_hostile_names import hostile_names
from trainwell.data.cache import build_split
from trainwell.data.decode import DecodeError, prepare_image
from trainwell.data.targets import collect_targets
from trainwell.training.predict import prediction_dataset

SIZE = 32
EXTENSIONS = tiny_params()["data"]["extensions"]


def varied_images(folder: Path) -> list[str]:
    """Files in every format and shape build handles: resized up and down, grey, alpha, 16-bit, float .npy."""
    rng = np.random.default_rng(3)
    files = {
        "jpeg_big.jpg": faults.encode(rng.integers(0, 256, (97, 61, 3), dtype=np.uint8), "JPEG", quality=85),
        "png_small.png": faults.encode(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8), "PNG"),
        "grey.png": faults.encode(rng.integers(0, 256, (40, 40), dtype=np.uint8), "PNG"),
        "rgba.png": faults.encode(rng.integers(0, 256, (33, 50, 4), dtype=np.uint8), "PNG"),
        "sixteen.tif": faults.encode(Image.fromarray(rng.integers(0, 65535, (45, 45), dtype=np.uint16)), "TIFF"),
        "palette.gif": faults.encode(Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).convert("P"), "GIF"),
        "exact.bmp": faults.encode(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8), "BMP"),
    }
    buffer = io.BytesIO()
    np.save(buffer, rng.random((50, 30, 3)).astype(np.float32))
    files["unit.npy"] = buffer.getvalue()
    for name, data in files.items():
        faults.write(folder / name, data)
    return sorted(files)


def test_predict_sees_exactly_the_pixels_build_cached(tmp_path):
    names = varied_images(tmp_path / "images")
    entry = build_split(root=tmp_path / "images", rows=[(name, "circle") for name in names], classes=["circle"],
                        image_size=SIZE, shard_size=4, out_dir=tmp_path / "cache" / "test", workers=2,
                        max_pixels=10**7)
    assert entry["skipped"] == []
    cached = np.concatenate([np.load(tmp_path / "cache" / "test" / shard["images"]) for shard in entry["shards"]])
    failures: dict[int, str] = {}
    # Inside Dataset.map (tf.numpy_function on the pipeline's threads) ...
    dataset = prediction_dataset(locations=[str(tmp_path / "images" / name) for name in names], image_size=SIZE,
                                 max_pixels=10**7, batch_size=3, failures=failures)
    streamed = np.concatenate([batch.numpy() for batch in dataset])
    assert failures == {}
    np.testing.assert_array_equal(streamed, cached)
    # ... and eagerly, the same function.
    for position, name in enumerate(names):
        eager = prepare_image((tmp_path / "images" / name).read_bytes(), suffix=Path(name).suffix, size=SIZE,
                              max_pixels=10**7)
        np.testing.assert_array_equal(eager, cached[position])


def test_a_file_that_breaks_after_its_check_is_reported_not_classified(tmp_path):
    good = faults.write(tmp_path / "good.png", faults.png_bytes())
    gone = faults.write(tmp_path / "gone.png", faults.png_bytes(1))
    changed = faults.write(tmp_path / "changed.jpg", faults.jpeg_bytes())
    fifo = faults.write(tmp_path / "fifo.png", faults.png_bytes(2))
    huge = faults.write(tmp_path / "huge.png", faults.png_bytes(3))
    gone.unlink()
    changed.write_bytes(faults.truncated_jpeg())
    fifo.unlink()
    os.mkfifo(fifo)  # swapped in after the check: opening it for reading would block for ever
    with huge.open("r+b") as handle:
        handle.truncate(64 * 10**6)  # sparse: refused from its size, never read
    failures: dict[int, str] = {}
    dataset = prediction_dataset(locations=[str(good), str(gone), str(changed), str(fifo), str(huge)],
                                 image_size=SIZE, max_pixels=10**6, batch_size=2, failures=failures)
    assert sum(len(batch) for batch in dataset) == 5
    assert failures[1].startswith("unreadable") and failures[2].startswith("truncated") and 0 not in failures
    assert failures[3].startswith("unreadable") and "not a regular file" in failures[3]
    assert failures[4].startswith("too_large")


def rows_of(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


BAD_INPUTS = {
    "corrupt.png": faults.broken_crc_png(),
    "truncated.jpg": faults.truncated_jpeg(),
    "nan.npy": faults.npy_with_nan(),
    "bomb.png": faults.bomb_png_header(),
    "empty.jpg": b"",
    "text.jpg": b"hello, not an image\n",
}
EXPECTED_KIND = {"corrupt.png": "corrupt", "truncated.jpg": "truncated", "nan.npy": "nan", "bomb.png": "too_large",
                 "empty.jpg": "empty_file", "text.jpg": "not_an_image"}


def test_each_bad_input_kind_is_refused_by_path_and_kind(predict_project, tmp_path):
    folder = tmp_path / "inputs"
    for name, data in BAD_INPUTS.items():
        faults.write(folder / name, data)
    faults.write(folder / "good" / "a.png", faults.png_bytes(2))
    faults.write(folder / "good" / "notes.txt", b"ignored: not an image extension")
    os.mkfifo(folder / "pipe.png")  # reading it would block for ever
    (folder / "dangling.png").symlink_to(tmp_path / "nowhere.png")
    (folder / "loop.png").symlink_to(folder / "loop.png")
    (folder / "linked_folder").symlink_to(folder / "good")
    result = trainwell_in_process(["predict", str(folder), str(tmp_path / "missing.jpg"), "--params",
                  str(predict_project / "params.yaml"), "--model", str(predict_project / "models" / "model.keras"), "--classes",
                  ",".join(CLASSES)], predict_project, check=False)
    assert result.returncode == 1, result.stderr
    rows = {Path(row["path"]).name: row for row in rows_of(result.stdout)}
    for name, kind in EXPECTED_KIND.items():
        assert rows[name]["status"] == "refused" and rows[name]["reason"].startswith(kind + ":"), rows[name]
        assert rows[name]["class"] == ""
    assert rows["pipe.png"]["reason"].startswith("special_file")
    assert rows["dangling.png"]["reason"].startswith("unreadable")
    assert rows["loop.png"]["reason"].startswith("unreadable")
    assert rows["linked_folder"]["reason"].startswith("special_file")
    assert rows["missing.jpg"]["reason"].startswith("missing_file")
    assert rows["a.png"]["status"] == "ok" and rows["a.png"]["class"] in CLASSES
    assert "notes.txt" not in rows and "1 files skipped" in result.stderr
    assert "refused 11" in result.stderr and "classified 1 of 12 inputs" in result.stderr

    allowed = trainwell_in_process(["predict", str(folder), "--allow-failures", "--params", str(predict_project / "params.yaml")],
                  predict_project, check=False)
    assert allowed.returncode == 0


def test_fuzzed_files_are_classified_or_refused_never_a_crash(predict_project, tmp_path):
    """Generated hostile input: mutated headers, truncations and bit flips of every format."""
    folder = tmp_path / "fuzz"
    for name, data in corpus(80, seed=11).items():
        faults.write(folder / name, data)
    result = trainwell_in_process(["predict", str(folder), "--format", "json", "--allow-failures"], predict_project, check=False)
    assert result.returncode in (0, 1), result.stderr  # 1 only when nothing at all was classified
    rows = json.loads(result.stdout)
    assert len(rows) == len(list(folder.rglob("*.*")))
    for row in rows:
        if row["status"] == "ok":
            assert row["class"] in CLASSES and 0.0 <= row["probability"] <= 1.0 and row["reason"] == ""
        else:
            assert row["reason"].split(":")[0] in ("corrupt", "truncated", "not_an_image", "too_large", "nan", "inf",
                                                   "empty_file", "decoder_crash", "decode_timeout", "unreadable")


def test_any_file_name_survives_into_csv_and_json(predict_project, tmp_path):
    folder = tmp_path / "names"
    names = [f"{name}.png" for name in hostile_names(12, seed=5)]
    for position, name in enumerate(names):
        faults.write(folder / name.replace("/", "_"), faults.png_bytes(position))
    output = tmp_path / "out" / "predictions.csv"
    trainwell_in_process(["predict", str(folder), "--output", str(output)], predict_project)
    text = output.read_bytes().decode("utf-8", "surrogateescape")
    written = {Path(row["path"]).name for row in rows_of(text)}
    assert written == {name.replace("/", "_") for name in names}
    trainwell_in_process(["predict", str(folder), "--output", str(tmp_path / "out.json")], predict_project)
    as_json = json.loads((tmp_path / "out.json").read_text())
    assert {Path(row["path"]).name for row in as_json} == written
    assert all(len(row["top_k"]) == 3 for row in as_json)
    probabilities = [entry["probability"] for entry in as_json[0]["top_k"]]
    assert probabilities == sorted(probabilities, reverse=True)


def test_manifest_rows_are_checked_before_anything_is_opened(predict_project, tmp_path):
    folder = tmp_path / "listed"
    faults.write(folder / "images" / "a.png", faults.png_bytes(1))
    faults.write(tmp_path / "outside.png", faults.png_bytes(2))
    (folder / "images" / "escape.png").symlink_to(tmp_path / "outside.png")
    manifest = folder / "inputs.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "note"])
        for path in ["images/a.png", "/etc/passwd", "../outside.png", "images/escape.png", "", "images/none.png"]:
            writer.writerow([path, "x"])
    result = trainwell_in_process(["predict", "--manifest", str(manifest)], predict_project, check=False)
    assert result.returncode == 1
    rows = {row["path"]: row for row in rows_of(result.stdout)}
    assert rows["images/a.png"]["status"] == "ok"
    assert rows["/etc/passwd"]["reason"].startswith("path_outside_root")
    assert rows["../outside.png"]["reason"].startswith("path_outside_root")
    assert rows["images/escape.png"]["reason"].startswith("symlink_outside")
    assert rows[""]["reason"].startswith("path_outside_root")
    assert rows["images/none.png"]["reason"].startswith("missing_file")

    broken = folder / "broken.csv"
    broken.write_text("file\nimages/a.png\n")
    usage = trainwell_in_process(["predict", "--manifest", str(broken)], predict_project, check=False)
    assert usage.returncode == 2 and "path" in usage.stderr


def test_usage_errors_say_what_to_do(predict_project, tmp_path):
    nothing = trainwell_in_process(["predict"], predict_project, check=False)
    assert nothing.returncode == 2 and "nothing to classify" in nothing.stderr
    faults.write(tmp_path / "a.png", faults.png_bytes())
    wrong = trainwell_in_process(["predict", str(tmp_path / "a.png"), "--classes", "a,b"], predict_project, check=False)
    assert wrong.returncode == 2 and "scores 5 classes" in wrong.stderr
    no_model = trainwell_in_process(["predict", str(tmp_path / "a.png"), "--model", str(tmp_path / "none.keras")],
                   predict_project, check=False)
    assert no_model.returncode == 2 and "--model" in no_model.stderr


def test_collect_targets_orders_folders_and_skips_hidden(tmp_path):
    rng = random.Random(0)
    names = [f"{rng.randint(0, 10**6):07d}.png" for _ in range(20)]
    for name in names:
        faults.write(tmp_path / "sub" / name, b"x")
    faults.write(tmp_path / "sub" / ".hidden.png", b"x")
    targets = collect_targets([str(tmp_path / "sub")], manifest=None, extensions=EXTENSIONS)
    assert [Path(name).name for name in targets.names] == sorted(names)
    assert targets.refused == []


def test_decode_error_kinds_match_the_audit():
    with pytest.raises(DecodeError) as caught:
        prepare_image(faults.truncated_jpeg(), suffix=".jpg", size=SIZE, max_pixels=10**7)
    assert caught.value.kind == "truncated"


def test_output_that_is_not_a_new_or_regular_file_is_refused_before_any_work(predict_project, tmp_path):
    image = faults.write(tmp_path / "in" / "a.png", faults.png_bytes())
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "link.csv").symlink_to(tmp_path / "elsewhere.csv")
    for output in (str(tmp_path / "fifo"), str(tmp_path / "link.csv"), str(tmp_path / "in"), str(image), ""):
        result = trainwell_in_process(["predict", str(tmp_path / "in"), "-o", output], predict_project, check=False)
        assert result.returncode == 2, (output, result.stderr)
        assert "--output" in result.stderr
    assert (tmp_path / "fifo").is_fifo() and (tmp_path / "link.csv").is_symlink() and not (tmp_path / "elsewhere.csv").exists()
    assert image.read_bytes() == faults.png_bytes()


@pytest.mark.parametrize("classes", ["a, ,b,c,d,e", "a,a,b,c,d", ""])
def test_class_names_that_would_shift_or_merge_labels_are_refused(predict_project, tmp_path, classes):
    faults.write(tmp_path / "a.png", faults.png_bytes())
    result = trainwell_in_process(["predict", str(tmp_path / "a.png"), "--classes", classes], predict_project, check=False)
    assert result.returncode == 2 and "--classes" in result.stderr, result.stderr


def test_a_model_whose_scores_are_not_probabilities_classifies_nothing(tmp_path):
    """A head whose outputs overflow to NaN, or logits: every row refused with the reason, never a class."""
    import keras

    from trainwell.training.model_files import save_model_file

    write_params(tmp_path, tiny_params())
    inputs = keras.Input((SIZE, SIZE, 3), dtype="uint8")
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1.0)(inputs))
    for name, layer in (("nan", keras.layers.Dense(5, kernel_initializer=keras.initializers.Constant(3e38),
                                                   activation="softmax")),
                        ("logits", keras.layers.Dense(5, kernel_initializer=keras.initializers.Constant(2.0)))):
        save_model_file(keras.Model(inputs, layer(keras.layers.Dense(4, kernel_initializer="ones")(pooled))),
                        tmp_path / f"{name}.keras")
    faults.write(tmp_path / "images" / "a.png", faults.png_bytes())
    for name in ("nan", "logits"):
        result = trainwell_in_process(["predict", str(tmp_path / "images"), "--model", str(tmp_path / f"{name}.keras"),
                      "--classes", ",".join(CLASSES), "--format", "json"], tmp_path, check=False)
        assert result.returncode == 1, result.stderr
        (row,) = json.loads(result.stdout)
        assert row["status"] == "refused" and row["reason"].startswith("model_output") and row["class"] == ""


def test_models_predict_cannot_feed_are_usage_errors(tmp_path):
    import keras

    from trainwell.training.model_files import save_model_file

    write_params(tmp_path, tiny_params())
    faults.write(tmp_path / "a.png", faults.png_bytes())
    shapes = {"any_size": (None, None, 3), "oblong": (SIZE, SIZE + 16, 3), "grey": (SIZE, SIZE, 1)}
    for name, shape in shapes.items():
        inputs = keras.Input(shape, dtype="uint8")
        pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1.0)(inputs))
        save_model_file(keras.Model(inputs, keras.layers.Dense(5, activation="softmax")(pooled)), tmp_path / f"{name}.keras")
        result = trainwell_in_process(["predict", str(tmp_path / "a.png"), "--model", str(tmp_path / f"{name}.keras"),
                      "--classes", ",".join(CLASSES)], tmp_path, check=False)
        assert result.returncode == 2 and "square RGB images" in result.stderr, (name, result.stderr)


def test_rows_come_in_the_order_given_and_an_empty_folder_is_a_usage_error(predict_project, tmp_path):
    faults.write(tmp_path / "b.png", faults.png_bytes(1))
    faults.write(tmp_path / "d.png", faults.png_bytes(2))
    (tmp_path / "empty").mkdir()
    order = [str(tmp_path / "d.png"), str(tmp_path / "missing.png"), str(tmp_path / "b.png")]
    result = trainwell_in_process(["predict", *order, "--allow-failures"], predict_project, check=False)
    assert [row["path"] for row in rows_of(result.stdout)] == order
    first = rows_of(result.stdout)[0]  # the runners-up in columns of their own, most probable first
    assert first["class"] in CLASSES and first["class_2"] in CLASSES and first["class_3"] in CLASSES
    assert float(first["probability"]) >= float(first["probability_2"]) >= float(first["probability_3"])
    assert rows_of(result.stdout)[1]["class_2"] == ""  # a refused input: empty cells
    empty = trainwell_in_process(["predict", str(tmp_path / "empty")], predict_project, check=False)
    assert empty.returncode == 2 and "no image files" in empty.stderr


@pytest.mark.parametrize("content, expected", [
    # Excel's BOM and CRLF; the leading space is part of the name. Read, it is classified.
    (b"\xef\xbb\xbfpath\r\n a.png\r\n", 0),
    (b"path,path\na.png,b.png\n", 2),                       # which column?
    (b'path\n"a.png\n', 2),                                 # an unclosed quote
])
def test_manifest_edge_cases(predict_project, tmp_path, content, expected):
    faults.write(tmp_path / " a.png", faults.png_bytes())
    faults.write(tmp_path / "a.png", b"not the file the manifest names")
    (tmp_path / "m.csv").write_bytes(content)
    result = trainwell_in_process(["predict", "--manifest", str(tmp_path / "m.csv")], predict_project, check=False)
    assert result.returncode == expected, result.stderr
    if expected == 0:
        assert [row["path"] for row in rows_of(result.stdout)] == [" a.png"]


def test_a_sparse_multi_gigabyte_file_is_refused_unread(predict_project, tmp_path):
    """Its size alone exceeds any image within audit.max_pixels: the audit's check refuses it before reading."""
    huge = faults.write(tmp_path / "huge.png", b"\x89PNG\r\n\x1a\n")
    with huge.open("r+b") as handle:
        handle.truncate(3 * 2**30)  # sparse: no disk used, 3 GiB to read
    result = trainwell_in_process(["predict", str(huge), "--format", "json"], predict_project, check=False)
    assert result.returncode == 1
    (row,) = json.loads(result.stdout)
    assert row["reason"].startswith("too_large") and "not read" in row["reason"]
