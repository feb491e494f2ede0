"""One end-to-end test per stage, run in-process on tiny data under tmp_path."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

from tests import faults
from tests.helpers import CLASSES, snapshot, tiny_params, write_params
from trainwell.audit import checks as audit_checks
from trainwell.audit import dataset as audit_data
from trainwell.data import cache as data_cache
from trainwell.data import demo
from trainwell.data.splits import SPLITS, group_units
from trainwell.outputs import read_rows
from trainwell.params import DemoParams, load_params
from trainwell.stages import audit, build, split


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_demo_data_is_deterministic_and_complete(tmp_path):
    params = DemoParams(classes=CLASSES, images_per_class=6, image_size=40, seed=3)
    first, second = tmp_path / "a", tmp_path / "b"
    assert demo.generate(out_dir=first, demo=params) == 30
    demo.generate(out_dir=second, demo=params)
    assert snapshot(first) == snapshot(second)  # same seed, same bytes
    assert sorted(p.name for p in first.iterdir() if p.is_dir()) == sorted(CLASSES)
    other = tmp_path / "c"
    demo.generate(out_dir=other, demo=params.model_copy(update={"seed": 4}))
    assert snapshot(first) != snapshot(other)


def test_demo_data_rejects_unknown_shape(tmp_path):
    with pytest.raises(ValueError, match="hexagon"):
        demo.generate(out_dir=tmp_path / "x", demo=DemoParams(classes=["hexagon"], images_per_class=1))


def test_audit_stage_on_clean_data_passes_and_writes_reports(demo_copy, workdir, capsys):
    assert audit.main() == 0
    params = load_params()
    report = json.loads(Path(params.paths.audit_report).read_text())
    assert report["files_scanned"] == 60
    assert report["quarantined"] == []
    metrics = json.loads(Path(params.paths.audit_metrics).read_text())
    assert metrics["files_scanned"] == 60 and metrics["errors"] == 0
    assert "policy holds" in capsys.readouterr().out


def test_audit_stage_names_bad_files_quarantines_them_and_fails(demo_copy, workdir, capsys):
    faults.write(demo_copy / "circle" / "cut.jpg", faults.truncated_jpeg())
    faults.write(demo_copy / "square" / "notes.jpg", b"not an image at all")
    faults.write(demo_copy / "ring" / "empty.png", b"")
    before = snapshot(demo_copy)

    assert audit.main() == 1
    output = capsys.readouterr().out
    assert "circle/cut.jpg" in output and "truncated" in output
    assert "square/notes.jpg" in output and "not_an_image" in output
    assert "ring/empty.png" in output and "empty_file" in output
    assert "policy violated" in output
    quarantine = read_rows(load_params().paths.quarantine, columns=["path", "kinds"])
    assert quarantine == [
        {"path": "circle/cut.jpg", "kinds": "truncated"},
        {"path": "ring/empty.png", "kinds": "empty_file"},
        {"path": "square/notes.jpg", "kinds": "not_an_image"},
    ]
    assert snapshot(demo_copy) == before  # the audit never touches user files


def test_audit_finds_duplicates_and_label_conflicts(demo_copy, workdir):
    source = sorted((demo_copy / "circle").iterdir())[0]
    faults.write(demo_copy / "circle" / "copy.jpg", source.read_bytes())
    faults.write(demo_copy / "square" / "stolen.jpg", source.read_bytes())
    report = audit_data.audit_dataset(root=demo_copy, data=load_params().data, policy=load_params().audit)
    kinds = {(issue.path, issue.kind) for issue in report.issues}
    assert ("square/stolen.jpg", "label_conflict") in kinds
    assert (f"circle/{source.name}", "label_conflict") in kinds
    assert "square/stolen.jpg" in report.quarantined
    assert not report.policy_holds


def test_audit_layout_problems(demo_copy, workdir, tmp_path):
    faults.write(demo_copy / "README.txt", b"stray")
    faults.write(demo_copy / "hexagon" / "h.png", faults.png_bytes())
    (demo_copy / "triangle" / "passwd.jpg").symlink_to("/etc/passwd")
    data = load_params().data.model_copy(update={"classes": CLASSES})
    report = audit_data.audit_dataset(root=demo_copy, data=data, policy=load_params().audit)
    kinds = {(issue.path, issue.kind, issue.severity) for issue in report.issues}
    assert ("README.txt", "stray_file", "warning") in kinds
    assert ("hexagon", "unknown_class", "warning") in kinds
    assert ("triangle/passwd.jpg", "symlink_outside", "error") in kinds
    assert report.files_scanned == 60  # the link was never read


def test_split_is_stratified_seeded_and_honours_quarantine(demo_copy, workdir):
    faults.write(demo_copy / "circle" / "cut.jpg", faults.truncated_jpeg())
    assert audit.main() == 1
    assert split.main() == 0
    params = load_params()
    splits_dir = Path(params.paths.splits_dir)
    rows = {name: read_csv(splits_dir / f"{name}.csv") for name in SPLITS}
    all_paths = [row["path"] for name in rows for row in rows[name]]
    assert "circle/cut.jpg" not in all_paths
    assert len(all_paths) == len(set(all_paths)) == 60
    for label in CLASSES:  # 12 per class, 25% val, 25% test
        assert [sum(row["label"] == label for row in rows[name]) for name in SPLITS] == [6, 3, 3]
    receipt = json.loads((splits_dir / "counts.json").read_text())
    assert receipt["files_excluded_by_audit"] == 1
    assert receipt["train"]["total"] == 30 and receipt["val"]["per_class"] == {label: 3 for label in sorted(CLASSES)}
    # The metric is the totals alone, the splits named as the pages name them.
    metric = json.loads(Path(params.paths.split_metrics).read_text())
    assert list(metric) == ["training", "validation", "test", "files_excluded_by_audit", "groups_kept_together"]
    assert (metric["training"], metric["validation"], metric["test"], metric["files_excluded_by_audit"]) == (30, 15, 15, 1)
    first = (splits_dir / "train.csv").read_text()
    assert split.main() == 0
    assert (splits_dir / "train.csv").read_text() == first  # deterministic


def test_build_caches_uint8_shards_and_skips_undecodable(demo_copy, workdir, capsys):
    assert audit.main() == 0 and split.main() == 0
    params = load_params()
    # A file damaged after the audit: build must name it and leave it out, not cache garbage.
    victim = read_csv(Path(params.paths.splits_dir) / "train.csv")[0]["path"]
    (demo_copy / victim).write_bytes(faults.truncated_jpeg())
    assert build.main() == 0
    assert victim in capsys.readouterr().err
    manifest = json.loads((Path(params.paths.cache_dir) / data_cache.CACHE_MANIFEST).read_text())
    assert manifest["classes"] == sorted(CLASSES)
    assert manifest["image_shape"] == [32, 32, 3]
    train = manifest["splits"]["train"]
    assert train["count"] == 29 and [entry["path"] for entry in train["skipped"]] == [victim]
    # shard_size 16 over 30 rows: one shard lost the damaged file (which one, the seeded shuffle decides).
    counts = [shard["count"] for shard in train["shards"]]
    assert sorted(counts) == [14, 15]
    images = np.load(Path(params.paths.cache_dir) / "train" / train["shards"][0]["images"])
    assert images.dtype == np.uint8 and images.shape == (counts[0], 32, 32, 3)
    paths = json.loads((Path(params.paths.cache_dir) / "train" / "paths.json").read_text())
    assert len(paths) == 29 and victim not in paths


def test_content_checks_flag_dark_light_flat_and_stretched_images(demo_copy, workdir):
    rng = np.random.default_rng(0)
    two_tone = np.zeros((40, 40, 3), dtype=np.uint8)
    two_tone[:1] = 128  # all but 2.5% of pixels the same: 0.17 bits, below audit.min_entropy (0.25)
    planted = {
        "noisy": (rng.integers(0, 256, size=(40, 40, 3), dtype=np.uint8), set()),
        "dark": (rng.integers(0, 12, size=(40, 40, 3), dtype=np.uint8), {"dark"}),
        "light": (rng.integers(245, 256, size=(40, 40, 3), dtype=np.uint8), {"light"}),
        "two_tone": (two_tone, {"low_information"}),
        "flat": (np.full((40, 40, 3), 7, dtype=np.uint8), {"constant"}),  # nothing else: a flat image has no scores
        "stretched": (rng.integers(0, 256, size=(20, 200, 3), dtype=np.uint8), {"odd_aspect_ratio"}),
    }
    for name, (pixels, _) in planted.items():  # among the demo set's good images, as PNG (lossless)
        faults.write(demo_copy / "circle" / f"{name}.png", faults.encode(pixels, "PNG"))
    report = audit_data.audit_dataset(root=demo_copy, data=load_params().data, policy=load_params().audit)
    for name, (_, expected) in planted.items():
        assert {issue.kind for issue in report.issues if issue.path == f"circle/{name}.png"} == expected, name
    assert {issue.path for issue in report.issues} == {f"circle/{name}.png" for name, (_, kinds) in planted.items()
                                                       if kinds}  # and no demo image
    # Shape and flatness are per-file facts; the properties need the dataset, so no per-file check makes them.
    assert audit_checks.content_findings(planted["stretched"][0], policy=load_params().audit)[0][0] == "odd_aspect_ratio"
    assert set(audit_checks.property_scores(np.zeros((4, 4), np.uint8))) == {"brightest", "darkest", "sharpness",
                                                                            "entropy"}


def test_generated_folders_never_replace_user_files(tmp_path):
    from trainwell.errors import DataError

    mine = tmp_path / "mine"
    faults.write(mine / "cat" / "precious.jpg", faults.jpeg_bytes())
    before = snapshot(mine)
    with pytest.raises(DataError, match="refusing to overwrite"):
        demo.generate(out_dir=mine, demo=DemoParams(classes=CLASSES, images_per_class=1, image_size=32))
    splits = tmp_path / "splits"
    faults.write(splits / "classes.json", b'["cat"]')
    with pytest.raises(DataError, match="refusing to overwrite"):
        data_cache.build_cache(data_dir=str(tmp_path), splits_dir=str(splits), cache_dir=str(mine),
                          image_size=32, shard_size=4, workers=1, max_pixels=10**6, seed=0)
    assert snapshot(mine) == before
    # A folder the stage made itself is replaced on the next run.
    generated = tmp_path / "demo"
    demo.generate(out_dir=generated, demo=DemoParams(classes=CLASSES, images_per_class=1, image_size=32))
    assert demo.generate(out_dir=generated, demo=DemoParams(classes=CLASSES, images_per_class=2, image_size=32)) == 10


def test_audit_groups_near_duplicates_and_flags_blur_and_imbalance(demo_copy, workdir):
    import io

    from PIL import Image, ImageFilter

    source = sorted((demo_copy / "ring").iterdir())[0]
    original = Image.open(source)
    # The same picture re-encoded, and a resized copy saved as PNG in another class.
    buffer = io.BytesIO()
    original.save(buffer, format="JPEG", quality=75)
    faults.write(demo_copy / "ring" / "recompressed.jpg", buffer.getvalue())
    faults.write(demo_copy / "cross" / "resized.png", faults.encode(original.resize((64, 64)).resize((32, 32)), "PNG"))
    faults.write(demo_copy / "square" / "soft.png", faults.encode(
        Image.fromarray(faults.image_array(5, size=48)).filter(ImageFilter.GaussianBlur(4)), "PNG"))
    for index in range(120):  # one class ten times bigger than another
        faults.write(demo_copy / "triangle" / f"extra_{index}.png", faults.png_bytes(100 + index))

    report = audit_data.audit_dataset(root=demo_copy, data=load_params().data, policy=load_params().audit)
    group = next(g for g in report.near_duplicate_groups if "ring/recompressed.jpg" in g["members"])
    assert {f"ring/{source.name}", "ring/recompressed.jpg", "cross/resized.png"} <= set(group["members"])
    assert group["size"] == len(group["members"]) and group["lowest_similarity"] >= 0.995
    kinds = {(issue.path, issue.kind) for issue in report.issues}
    assert ("cross/resized.png", "near_duplicate") in kinds
    assert ("square/soft.png", "blurry") in kinds
    imbalance = [issue for issue in report.issues if issue.kind == "class_imbalance"]
    assert len(imbalance) == 1 and "'triangle'" in imbalance[0].detail
    assert report.policy_holds  # all warnings by default
    assert report.as_dict()["near_duplicate_groups"] == report.near_duplicate_groups


def test_near_duplicates_need_alike_fine_thumbnails_and_colours_and_never_chain():
    from trainwell.audit.near_duplicates import Confirm, near_duplicate_groups, near_duplicate_pairs

    rng = np.random.default_rng(0)
    base = rng.integers(40, 200, size=(16, 16)).astype(np.int16)
    fine = np.stack([base, base + 1, base + 2, rng.integers(40, 200, size=(16, 16)), base, base]).reshape(6, 256)
    fine = np.clip(fine, 0, 255).astype(np.uint8)
    hashes = np.zeros((6, 8), dtype=np.uint8)  # every pHash alike: only the finer measures decide
    thumbnails = np.tile(np.array([120, 80, 80], dtype=np.uint8), (6, 64))
    thumbnails[4] = np.tile([80, 80, 120], 64)  # same grey structure, another colour
    thumbnails[5] = thumbnails[0] + 30  # the same picture brighter: chroma unchanged
    confirm = Confirm(min_similarity=0.995, max_colour_difference=6.0)
    pairs = near_duplicate_pairs(hashes=hashes, fine=fine, thumbnails=thumbnails, max_distance=5, confirm=confirm)
    # 0, 1, 2 and 5 are one picture (brightness shifted); 3 has other content; 4 other colours.
    assert pairs.tolist() == [[0, 1], [0, 2], [0, 5], [1, 2], [1, 5], [2, 5]]
    groups = near_duplicate_groups(pairs, count=6, fine=fine)
    assert [group.members for group in groups] == [[0, 1, 2, 5]] and groups[0].lowest_similarity >= 0.995


def test_incremental_audit_decodes_only_new_and_changed_files(demo_copy, workdir):
    cache = workdir / "audit-cache.json"
    params = load_params()
    first = audit_data.audit_dataset(root=demo_copy, data=params.data, policy=params.audit, cache_file=cache)
    assert first.files_decoded == 60

    unchanged = audit_data.audit_dataset(root=demo_copy, data=params.data, policy=params.audit, cache_file=cache)
    assert unchanged.files_decoded == 0
    assert unchanged.as_dict()["issues"] == first.as_dict()["issues"]

    files = sorted((demo_copy / "cross").iterdir())
    files[0].write_bytes(faults.truncated_jpeg())  # changed: must be re-checked
    files[1].unlink()  # removed: drops out
    faults.write(demo_copy / "cross" / "new.png", faults.png_bytes(9))  # added
    os.utime(files[2], ns=(1, 1))  # touched only: same bytes, reused without decoding
    (demo_copy / "cross" / "copy.png").write_bytes(files[3].read_bytes())  # known bytes, but named .png
    again = audit_data.audit_dataset(root=demo_copy, data=params.data, policy=params.audit, cache_file=cache)
    assert again.files_decoded == 3
    assert again.files_scanned == 61
    assert ("cross/copy.png", "extension_mismatch") in {(i.path, i.kind) for i in again.issues}
    fresh = audit_data.audit_dataset(root=demo_copy, data=params.data, policy=params.audit)
    assert again.as_dict()["issues"] == fresh.as_dict()["issues"]
    assert (f"cross/{files[0].name}", "truncated") in {(i.path, i.kind) for i in again.issues}
    stored = json.loads(cache.read_text())["paths"]
    assert f"cross/{files[1].name}" not in stored and "cross/new.png" in stored

    # Near-duplicate pairs are reused for unchanged files and found for changed ones.
    copy_source = sorted((demo_copy / "ring").iterdir())[0]
    faults.write(demo_copy / "circle" / "lookalike.png", faults.encode(
        __import__("PIL.Image").Image.open(copy_source).resize((64, 64)).resize((32, 32)), "PNG"))
    with_copy = audit_data.audit_dataset(root=demo_copy, data=params.data, policy=params.audit, cache_file=cache)
    assert with_copy.files_decoded == 1
    (demo_copy / "cross" / "copy.png").unlink()
    assert any("circle/lookalike.png" in group["members"] for group in with_copy.near_duplicate_groups)
    unchanged_again = audit_data.audit_dataset(root=demo_copy, data=params.data, policy=params.audit, cache_file=cache)
    assert unchanged_again.files_decoded == 0
    assert unchanged_again.near_duplicate_groups == with_copy.near_duplicate_groups
    assert unchanged_again.as_dict() == audit_data.audit_dataset(root=demo_copy, data=params.data, policy=params.audit).as_dict()
    looser = params.audit.model_copy(update={"near_duplicate_distance": 12})
    assert audit_data.audit_dataset(root=demo_copy, data=params.data, policy=looser, cache_file=cache).as_dict() == \
        audit_data.audit_dataset(root=demo_copy, data=params.data, policy=looser).as_dict()

    # The image properties are judged from cached scores: new bounds re-judge every file, decoding none.
    stricter = params.audit.model_copy(update={"dark_below": 200.0})
    rejudged = audit_data.audit_dataset(root=demo_copy, data=params.data, policy=stricter, cache_file=cache)
    assert rejudged.files_decoded == 0
    assert rejudged.as_dict() == audit_data.audit_dataset(root=demo_copy, data=params.data, policy=stricter).as_dict()
    assert sum(issue.kind == "dark" for issue in rejudged.issues) > 0
    smaller = params.audit.model_copy(update={"min_side": 40})  # a per-file threshold changed
    assert audit_data.audit_dataset(root=demo_copy, data=params.data, policy=smaller, cache_file=cache).files_decoded == 61


def test_incremental_audit_matches_digests_that_end_in_zero_bytes(workdir):
    # numpy's S16 items drop trailing NUL bytes: a cached digest ending in 00 once failed to equal
    # the same digest computed afresh, so a cached file and its new re-encoded copy went unpaired.
    from PIL.PngImagePlugin import PngInfo

    from trainwell.audit.cache import content_hash
    from trainwell.params import AuditParams, DataParams

    root = workdir / "images"
    for seed in range(3000):  # pixels whose digest ends in a zero byte (1 in 256)
        pixels = faults.image_array(seed, 24)
        probe = faults.write(root / "pets" / "original.png", faults.encode(pixels, "PNG"))
        pixel_hash = audit_checks.check_file(root=root, path="pets/original.png", label="pets", policy=AuditParams()).pixel_hash
        if pixel_hash[-2:] == "00":
            break
    for number in range(3000):  # and bytes whose digest does too: a text chunk changes the bytes only
        info = PngInfo()
        info.add_text("n", str(number))
        encoded = faults.encode(pixels, "PNG", pnginfo=info)
        if content_hash(encoded)[-2:] == "00":
            break
    assert pixel_hash[-2:] == "00" and content_hash(encoded)[-2:] == "00" and probe.exists()
    original = faults.write(root / "pets" / "original.png", encoded)
    faults.write(root / "dogs" / "other.png", faults.png_bytes(3))
    data, cache = DataParams(dir=str(root)), workdir / "cache.json"
    audit_data.audit_dataset(root=root, data=data, policy=AuditParams(), cache_file=cache)
    # The same pixels in other bytes (decoded now), and the same bytes under another name (reused).
    faults.write(root / "pets" / "recompressed.png", faults.encode(pixels, "PNG", compress_level=1))
    faults.write(root / "pets" / "copied.png", original.read_bytes())
    report = audit_data.audit_dataset(root=root, data=data, policy=AuditParams(), cache_file=cache)
    assert report.files_decoded == 1
    assert report.duplicate_groups == [["pets/copied.png", "pets/original.png", "pets/recompressed.png"]]
    assert report.as_dict() == audit_data.audit_dataset(root=root, data=data, policy=AuditParams()).as_dict()


def test_split_keeps_duplicate_and_near_duplicate_groups_in_one_split(demo_copy, workdir):
    from PIL import Image

    # Ten pictures, each with a resized near-copy and an exact copy in its own class.
    for index, source in enumerate(sorted((demo_copy / "circle").iterdir())[:10]):
        picture = Image.open(source)
        faults.write(demo_copy / "circle" / f"near_{index}.png", faults.encode(picture.resize((64, 64)).resize((32, 32)), "PNG"))
        faults.write(demo_copy / "circle" / f"exact_{index}.jpg", source.read_bytes())
    assert audit.main() == 0
    assert split.main() == 0
    params = load_params()
    where = {row["path"]: name for name in SPLITS
             for row in read_csv(Path(params.paths.splits_dir) / f"{name}.csv")}
    for index, source in enumerate(sorted(p for p in (demo_copy / "circle").iterdir() if p.name.startswith("circle_"))[:10]):
        members = {f"circle/{source.name}", f"circle/near_{index}.png", f"circle/exact_{index}.jpg"}
        assert len({where[member] for member in members}) == 1, members  # never straddles splits
    receipt = json.loads(Path(params.paths.split_metrics).read_text())
    assert receipt["groups_kept_together"] == 10
    assert receipt["training"] + receipt["validation"] + receipt["test"] == 80


def test_group_units_merge_transitively_and_ignore_quarantined():
    files = [("a", "x"), ("b", "x"), ("c", "y"), ("d", "y"), ("e", "y")]
    # q is quarantined: it links nothing. b-c and c-e chain into one unit across classes.
    units = group_units(files, [["a", "q"], ["q", "b"], ["b", "c"], ["e", "c"]])
    assert units == [[("a", "x")], [("b", "x"), ("c", "y"), ("e", "y")], [("d", "y")]]


def test_manifest_dataset_flows_through_split_and_build(demo_set, workdir):
    # The demo images, labelled by a manifest instead of by their folders.
    root = workdir / "data" / "demo"
    rows = []
    for source in sorted(demo_set.rglob("*.jpg")):
        target = root / "all" / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(source.read_bytes())
        rows.append(f"all/{source.name},{source.parent.name}")
    (root / "labels.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    params = tiny_params()
    params["data"]["manifest"] = "data/demo/labels.csv"
    write_params(workdir, params)
    assert audit.main() == 0 and split.main() == 0 and build.main() == 0
    manifest = json.loads((Path(load_params().paths.cache_dir) / data_cache.CACHE_MANIFEST).read_text())
    assert manifest["classes"] == sorted(CLASSES)
    assert sum(entry["count"] for entry in manifest["splits"].values()) == 60
    train_rows = read_csv(Path(load_params().paths.splits_dir) / "train.csv")
    assert all(row["path"].startswith("all/") for row in train_rows)
    assert {row["label"] for row in train_rows} == set(CLASSES)
