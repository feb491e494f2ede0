"""The cache's row order: a seeded shuffle of each split list, so every shard and streamed batch mixes the classes."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import CLASSES, snapshot, tiny_params, write_params
from trainwell.data.cache import CACHE_MANIFEST, build_split, open_split, shuffle_rows
from trainwell.data.decode import prepare_image
from trainwell.data.demo import generate
from trainwell.data.splits import SPLITS, read_split_csv
from trainwell.params import DemoParams, load_params
from trainwell.stages import audit, build, split
from trainwell.training.inputs import BatchSpec, choose_split_input

IMAGES_PER_CLASS = 40  # split 20/10/10 a class: train 100 rows, val and test 50 each
SHARD_SIZE = 8  # images per shard: 13 train shards, 7 each for val and test
BATCH_SIZE = 8


@pytest.fixture(scope="module")
def demo_40(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A demo set of 40 images a class: enough that a split list's class runs are longer than a shard."""
    root = tmp_path_factory.mktemp("demo40") / "demo"
    generate(out_dir=root, demo=DemoParams(classes=CLASSES, images_per_class=IMAGES_PER_CLASS, image_size=32, seed=0))
    return root


def project_params(**build: int) -> dict:
    params = tiny_params(images_per_class=IMAGES_PER_CLASS)
    params["build"].update(shard_size=SHARD_SIZE, **build)
    return params


@pytest.fixture
def built(demo_40: Path, workdir: Path) -> Path:
    """demo_40 split and built with tiny shards; returns the project folder."""
    shutil.copytree(demo_40, workdir / "data" / "demo")
    write_params(workdir, project_params())
    assert audit.main() == 0 and split.main() == 0 and build.main() == 0
    return workdir


def classes_per_chunk(labels: list, size: int) -> list[int]:
    return [len(set(labels[start : start + size])) for start in range(0, len(labels), size)]


def test_shuffle_rows_is_a_seeded_permutation_per_split():
    rows = [(f"{label}/{index}.jpg", label) for label in CLASSES for index in range(20)]
    shuffled = shuffle_rows(rows, seed=0, split="train")
    assert sorted(shuffled) == sorted(rows) and shuffled != rows
    assert shuffle_rows(rows, seed=0, split="train") == shuffled  # same seed, same order
    assert shuffle_rows(rows, seed=1, split="train") != shuffled
    assert shuffle_rows(rows, seed=0, split="val") != shuffled  # splits are not shuffled alike
    assert shuffle_rows([], seed=0, split="train") == []


def test_every_shard_of_a_class_sorted_split_holds_several_classes(built):
    paths = load_params().paths
    manifest = json.loads((Path(paths.cache_dir) / CACHE_MANIFEST).read_text())
    assert manifest["shuffle_seed"] == 0
    for name in SPLITS:
        listed = [label for _, label in read_split_csv(Path(paths.splits_dir) / f"{name}.csv")]
        # The split list is sorted by path, so by class folder: shards cut from it in that order
        # would hold at most two classes each (what build wrote before the shuffle).
        assert max(classes_per_chunk(listed, SHARD_SIZE)) <= 2, name
        shards = manifest["splits"][name]["shards"]
        assert len(shards) == -(-len(listed) // SHARD_SIZE)
        for shard in shards[:-1]:  # the last holds the remainder (2 rows in val and test)
            labels = np.load(Path(paths.cache_dir) / name / shard["labels"])
            assert len(set(labels.tolist())) >= 3, (name, shard["labels"], labels.tolist())


def test_every_cached_row_holds_the_pixels_and_label_of_the_file_it_names(built):
    params = load_params()
    paths = params.paths
    for name in SPLITS:
        cached = open_split(cache_dir=paths.cache_dir, split=name)
        listed = dict(read_split_csv(Path(paths.splits_dir) / f"{name}.csv"))
        assert sorted(cached.paths) == sorted(listed)
        assert cached.paths != sorted(listed)  # shuffled, or this test would prove nothing about pairing
        images = cached.load_images()
        for row, path in enumerate(cached.paths):
            expected = prepare_image((Path(params.data.dir) / path).read_bytes(), suffix=os.path.splitext(path)[1],
                                     size=params.data.image_size, max_pixels=params.audit.max_pixels)
            np.testing.assert_array_equal(images[row], expected, err_msg=path)
            assert cached.classes[cached.labels[row]] == listed[path], path


def test_the_same_inputs_and_seed_build_byte_identical_caches(built):
    paths = load_params().paths
    first = snapshot(Path(paths.cache_dir))
    assert build.main() == 0
    assert snapshot(Path(paths.cache_dir)) == first
    # And the seed is what orders it: another seed, other shards.
    write_params(built, project_params(seed=1))
    assert build.main() == 0
    other = snapshot(Path(paths.cache_dir))
    assert other != first
    assert json.loads(other["train/paths.json"][1]) != json.loads(first["train/paths.json"][1])


def streamed_batch_classes(cache_dir: str) -> tuple[list[int], list[int]]:
    """Classes per full training batch of 2 epochs streamed from the train split's shards: planned
    eagerly (epoch_batches, indices into the split's labels) and as the tf.data stream yields them.
    (The last shard's 4 rows make a short batch, left out.)"""
    streamed = choose_split_input(open_split(cache_dir=cache_dir, split="train"), memory_budget_bytes=0)
    assert streamed.streaming
    labels = streamed.split.labels
    planned = [len(set(labels[batch].tolist())) for epoch in range(2)
               for batch in streamed.epoch_batches(seed=0, epoch=epoch, batch_size=BATCH_SIZE)
               if len(batch) == BATCH_SIZE]
    dataset = streamed.train_dataset(BatchSpec(num_classes=len(streamed.split.classes), batch_size=BATCH_SIZE, seed=0,
                                               first_epoch=0, epochs=2))
    yielded = [len(set(np.argmax(one_hot.numpy(), axis=1).tolist())) for _, one_hot in dataset
               if len(one_hot) == BATCH_SIZE]
    return planned, yielded


def test_streamed_training_batches_mix_the_classes(built):
    paths = load_params().paths
    planned, yielded = streamed_batch_classes(paths.cache_dir)
    assert planned == yielded
    assert min(yielded) > 2, yielded

    # The same split cached in its list's order (what build did before the shuffle): batches of one or two classes.
    rows = read_split_csv(Path(paths.splits_dir) / "train.csv")
    unshuffled = built / "unshuffled"
    entry = build_split(root=Path(load_params().data.dir), rows=rows, classes=sorted(CLASSES), image_size=32,
                        shard_size=SHARD_SIZE, out_dir=unshuffled / "train", workers=1, max_pixels=10**7)
    (unshuffled / CACHE_MANIFEST).write_text(json.dumps({**json.loads((Path(paths.cache_dir) / CACHE_MANIFEST).read_text()),
                                                   "splits": {"train": entry}}))
    planned, yielded = streamed_batch_classes(str(unshuffled))
    assert planned == yielded and max(yielded) <= 2


def test_the_manifest_records_how_large_the_sources_were(tmp_path):
    """build records each split's sources' longer sides (median, 90th percentile, largest) before
    resizing: label review sizes its fold models by them. Generated sizes, some up- and some
    downscaled; source_side reads the largest 90th percentile and shrugs at a manifest without it."""
    from PIL import Image

    from trainwell.data.cache import source_side, source_side_summary

    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    sides = []
    rows = []
    for index in range(25):
        width, height = (int(side) for side in rng.integers(8, 90, size=2))
        sides.append(max(width, height))
        path = f"a/{index}.png"
        (root / "a").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, size=(height, width, 3), dtype=np.uint8)).save(root / path)
        rows.append((path, "a"))
    entry = build_split(root=root, rows=rows, classes=["a"], image_size=32, shard_size=10, out_dir=tmp_path / "out",
                        workers=2, max_pixels=10**6)
    assert entry["source_side"] == source_side_summary(sides)
    expected = np.percentile(sides, [50, 90], method="higher")
    assert entry["source_side"] == {"median": int(expected[0]), "p90": int(expected[1]), "max": max(sides)}
    assert source_side_summary([]) is None
    manifest = {"splits": {"train": entry, "val": {"source_side": {"median": 5, "p90": 7, "max": 9}}, "test": {}}}
    assert source_side(manifest) == max(int(expected[1]), 7)
    for hostile in ({}, {"splits": []}, {"splits": {"train": "x"}}, {"splits": {"train": {"source_side": {"p90": "9"}}}},
                    {"splits": {"train": {"source_side": None}}}, {"splits": {"train": {"source_side": {"p90": True}}}},
                    {"splits": {"train": {"source_side": {"p90": -3}}}}):
        assert source_side(hostile) is None
