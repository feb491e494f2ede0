"""Splits larger than the memory budget stream from the cache shard by shard: same contract, bounded memory."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import REPO_ROOT, tiny_params, write_params
from trainwell.data.cache import CACHE_FORMAT, combine_splits, open_split
from trainwell.errors import DataError
from trainwell.params import load_params
from trainwell.stages import audit, build, evaluate, split, train
from trainwell.training.inputs import (
    BatchSpec,
    InMemoryInput,
    StreamedInput,
    choose_split_input,
    make_streaming_dataset,
    plan_inputs,
    read_npy_tensor,
    streaming_epoch_batches,
    streaming_step_sizes,
    streaming_steps,
)


def write_cache(root: Path, *, counts: list[int], size: int = 4) -> Path:
    """A build-format cache whose pixel (0, 0) encodes each image's index, so batches can be traced."""
    folder = root / "train"
    folder.mkdir(parents=True)
    shards, start = [], 0
    for number, count in enumerate(counts):
        index = np.arange(start, start + count)
        images = np.zeros((count, size, size, 3), np.uint8)
        images[:, 0, 0, 0], images[:, 0, 0, 1] = index % 256, index // 256
        np.save(folder / f"images-{number:05d}.npy", images)
        np.save(folder / f"labels-{number:05d}.npy", (index % 5).astype(np.int32))
        shards.append({"images": f"images-{number:05d}.npy", "labels": f"labels-{number:05d}.npy", "count": count})
        start += count
    (folder / "paths.json").write_text(json.dumps([f"file{index}.jpg" for index in range(start)]))
    manifest = {"format": CACHE_FORMAT, "classes": list("abcde"), "image_shape": [size, size, 3], "splits": {"train": {"shards": shards}}}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def indices_of(batch_images: tf.Tensor) -> list[int]:
    pixels = batch_images.numpy().astype(int)
    return (pixels[:, 0, 0, 0] + 256 * pixels[:, 0, 0, 1]).tolist()


def test_npy_reader_matches_numpy_eagerly_and_inside_a_dataset(tmp_path):
    array = np.random.default_rng(0).integers(0, 255, size=(7, 5, 5, 3), dtype=np.uint8)
    path = tmp_path / "a.npy"
    np.save(path, array)
    eager = read_npy_tensor(str(path), dtype=tf.uint8, tail_shape=(5, 5, 3))
    np.testing.assert_array_equal(eager.numpy(), array)
    mapped = tf.data.Dataset.from_tensors(str(path)).map(
        lambda name: read_npy_tensor(name, dtype=tf.uint8, tail_shape=(5, 5, 3)))
    np.testing.assert_array_equal(next(iter(mapped)).numpy(), array)


@pytest.mark.parametrize("seed", [3, None], ids=["training order", "file order"])
def test_streamed_batches_are_the_planned_ones_and_cover_each_epoch_once(tmp_path, seed):
    split_data = open_split(cache_dir=write_cache(tmp_path, counts=[50, 50, 23]), split="train")
    dataset = make_streaming_dataset(split=split_data, spec=BatchSpec(num_classes=5, batch_size=16, seed=seed, epochs=2))
    batches = list(dataset)
    assert len(batches) == 2 * streaming_steps(split=split_data, batch_size=16) == 2 * (4 + 4 + 2)
    seen = [indices_of(images) for images, _ in batches]
    planned = [batch.tolist() for epoch in (0, 1)
               for batch in streaming_epoch_batches(split=split_data, seed=seed, epoch=epoch, batch_size=16)]
    assert seen == planned  # the guard names files from this plan
    for epoch in (0, 10):
        assert sorted(sum(seen[epoch:epoch + 10], [])) == list(range(123))
    if seed is not None:
        assert seen[:10] != seen[10:]  # a new order every epoch
        assert seen[0] != sorted(seen[0])
    for (_images, labels), indices in zip(batches, seen):
        assert np.argmax(labels.numpy(), axis=1).tolist() == [index % 5 for index in indices]


def _shard_of(split_data, index: int) -> int:
    return int(np.searchsorted(split_data.offsets, index, side="right")) - 1


def test_streamed_training_shards_by_shard_across_workers(tmp_path):
    # Five shards (40, 40, 40, 40, 23 images), two workers with two replicas each, global batch 16:
    # each worker takes 8 images a step, cut into two replica slices of 4.
    split_data = open_split(cache_dir=write_cache(tmp_path, counts=[40, 40, 40, 40, 23]), split="train")
    layout = {"batch_size": 16, "replicas": 4, "workers": 2}
    steps = streaming_steps(split=split_data, **layout)
    assert steps == (4 * 5 + 3) // 2  # 23 worker batches of 8 (the 23-image shard: 8, 8, 7) over 2 workers
    streams = []
    for worker in (0, 1):
        dataset = make_streaming_dataset(split=split_data, spec=BatchSpec(
            num_classes=5, batch_size=16, seed=7, first_epoch=0, epochs=3, replicas=4, pipeline=worker, pipelines=2))
        streams.append([indices_of(images) for images, _ in dataset])
        assert len(streams[worker]) == 3 * steps * 2  # two replica slices per step
    seen_over_epochs: set[int] = set()
    for epoch in range(3):
        planned = streaming_epoch_batches(split=split_data, seed=7, epoch=epoch, **layout)
        assert len(planned) == steps
        assert [len(batch) for batch in planned] == streaming_step_sizes(split=split_data, seed=7, epoch=epoch, **layout)
        epoch_indices, shards_read = [], []
        for worker in (0, 1):
            slices = streams[worker][epoch * steps * 2 : (epoch + 1) * steps * 2]
            assert all(1 <= len(piece) <= 4 for piece in slices)  # replica slices of a worker batch of <= 8
            shards_read.append({_shard_of(split_data, index) for piece in slices for index in piece})
            epoch_indices.append([sum(slices[2 * step : 2 * step + 2], []) for step in range(steps)])
        # Global batch t is worker 0's t-th batch then worker 1's: what the guard names files from.
        assert [a + b for a, b in zip(*epoch_indices)] == [batch.tolist() for batch in planned]
        # Each worker reads its own stretch of shards: at most one shard (the boundary) is read by both.
        assert len(shards_read[0] & shards_read[1]) <= 1 and len(shards_read[0] | shards_read[1]) == 5
        flat = [index for batch in planned for index in batch.tolist()]
        assert len(flat) == len(set(flat)) and 183 - len(flat) <= 8  # at most one worker batch sits out
        seen_over_epochs |= set(flat)
    assert seen_over_epochs == set(range(183))  # what sits out rotates
    # One worker is the plain single-pipeline stream.
    single = layout | {"workers": 1, "replicas": 1}
    assert [b.tolist() for b in streaming_epoch_batches(split=split_data, seed=7, epoch=0, **single)] == [
        indices_of(images) for images, _ in make_streaming_dataset(
            split=split_data, spec=BatchSpec(num_classes=5, batch_size=16, seed=7, first_epoch=0, epochs=1))]
    with pytest.raises(DataError, match=r"not a multiple of the 2 workers.*use 14 or 16"):
        streaming_steps(split=split_data, batch_size=15, replicas=2, workers=2)
    one_shard = open_split(cache_dir=write_cache(tmp_path / "small", counts=[10]), split="train")
    with pytest.raises(DataError, match=r"1 worker batch\(es\) of 16 images per epoch, fewer than the 2 workers"):
        streaming_steps(split=one_shard, batch_size=32, replicas=2, workers=2)


def test_the_memory_budget_decides_what_streams(tmp_path):
    cache = write_cache(tmp_path, counts=[40, 40])  # 80 images x 48 bytes = 3,840 bytes
    assert not plan_inputs(cache_dir=cache, splits=["train"], memory_budget_bytes=4 * 3840)["train"].streaming
    assert plan_inputs(cache_dir=cache, splits=["train"], memory_budget_bytes=4 * 3840 - 1)["train"].streaming


@pytest.mark.parametrize("budget", [1 << 20, 0], ids=["in memory", "streamed"])
def test_both_shapes_yield_their_batch_plan_and_evaluate_in_file_order(tmp_path, budget):
    # One interface, two shapes: each yields the batches its own plan names (the guard's incident
    # records), whatever the spec (generated: batch sizes, seeds, resumed epochs, class weights).
    split_data = open_split(cache_dir=write_cache(tmp_path, counts=[20, 20, 7]), split="train")
    split_input = choose_split_input(split_data, memory_budget_bytes=budget)
    assert isinstance(split_input, InMemoryInput if budget else StreamedInput)
    assert split_input.memory_cost == (4 * split_data.image_bytes if budget else 0)
    rng = np.random.default_rng(budget)
    for _ in range(2):
        batch, seed, first = int(rng.integers(2, 20)), int(rng.integers(0, 1000)), int(rng.integers(0, 3))
        weights = {int(rng.integers(0, 5)): float(rng.uniform(0.1, 4))}
        spec = BatchSpec(num_classes=5, batch_size=batch, seed=seed, first_epoch=first, epochs=first + 2,
                         class_weights=weights)
        batches = list(split_input.train_dataset(spec))
        planned = [plan.tolist() for epoch in (first, first + 1)
                   for plan in split_input.epoch_batches(seed=seed, epoch=epoch, batch_size=batch)]
        assert [indices_of(images) for images, _, _ in batches] == planned
        assert len(batches) == 2 * split_input.steps(batch_size=batch)
        for images, _, sample_weights in batches:
            assert sample_weights.numpy().tolist() == [
                pytest.approx(weights.get(index % 5, 1.0)) for index in indices_of(images)]
    # A training spec evaluates every example once in file order, without weights or augmentation.
    evaluated = list(split_input.eval_dataset(spec))
    assert all(len(element) == 2 for element in evaluated)
    assert sum((indices_of(images) for images, _ in evaluated), []) == list(range(47))
    with pytest.raises(ValueError, match="training batches need a seed"):
        split_input.train_dataset(BatchSpec(num_classes=5, batch_size=8))


def test_a_view_of_several_splits_reads_exactly_its_examples_in_memory_or_streamed(tmp_path):
    # The label review's folds: a selection out of splits put end to end, never loaded whole.
    first = open_split(cache_dir=write_cache(tmp_path / "a", counts=[50, 50, 23]), split="train")
    second = open_split(cache_dir=write_cache(tmp_path / "b", counts=[30]), split="train")
    both = combine_splits([first, second], folder=str(tmp_path))
    assert both.rows is None and len(both.labels) == 153 and both.paths[123] == "file0.jpg"
    chosen = np.flatnonzero(np.arange(153) % 3 != 1)[5:]  # skips rows in every shard, all of shard 1's start
    view = both.select(chosen)
    # Pixel (0, 0) holds each image's index within its own cache: 0..122, then 0..29.
    expected = [int(index) if index < 123 else int(index) - 123 for index in chosen]
    assert view.paths == [both.paths[index] for index in chosen]
    assert view.labels.tolist() == [index % 5 for index in expected]
    assert view.image_bytes == len(chosen) * 48
    assert indices_of(tf.constant(view.load_images())) == expected
    assert [int(view.image(index)[0, 0, 0]) + 256 * int(view.image(index)[0, 0, 1]) for index in (0, 50, 96)] == \
        [expected[0], expected[50], expected[96]]
    streamed = make_streaming_dataset(split=view, spec=BatchSpec(num_classes=5, batch_size=16, seed=None))
    assert sum((indices_of(images) for images, _ in streamed), []) == expected  # file order, each once
    training = list(make_streaming_dataset(split=view, spec=BatchSpec(num_classes=5, batch_size=16, seed=3, epochs=2)))
    epoch_steps = streaming_steps(split=view, batch_size=16)
    for epoch in (0, 1):
        seen = sum((indices_of(images) for images, _ in training[epoch * epoch_steps:(epoch + 1) * epoch_steps]), [])
        assert sorted(seen) == sorted(expected)
    for images, labels in training:
        assert np.argmax(labels.numpy(), axis=1).tolist() == [index % 5 for index in indices_of(images)]
    # A view of a view picks from the view's own order.
    inner = view.select(np.array([0, 1, 60, len(chosen) - 1]))
    assert indices_of(tf.constant(inner.load_images())) == [expected[0], expected[1], expected[60], expected[-1]]
    # The budget decides per view: in memory it holds exactly the same images.
    held = choose_split_input(view, memory_budget_bytes=4 * view.image_bytes)
    assert not held.streaming and indices_of(tf.constant(held.images)) == expected
    assert choose_split_input(view, memory_budget_bytes=4 * view.image_bytes - 1).streaming
    with pytest.raises(ValueError, match="increasing"):
        view.select(np.array([3, 2]))


# Peak RSS from /proc (VmHWM, this process's own address space): getrusage's ru_maxrss survives
# exec, so a child of a large pytest process would start from the parent's peak.
PEAK_SCRIPT = """
import sys
import tensorflow as tf
from trainwell.training.inputs import BatchSpec, plan_inputs

def peak_kib():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))

tf.data.Dataset.range(3).map(lambda x: x + 1).reduce(tf.constant(0, tf.int64), lambda a, b: a + b)  # runtime up first
before = peak_kib()
plan = plan_inputs(cache_dir=sys.argv[1], splits=["train"], memory_budget_bytes=int(sys.argv[2]))["train"]
dataset = plan.train_dataset(BatchSpec(num_classes=5, batch_size=256, seed=0, first_epoch=0, epochs=1))
count = sum(int(images.shape[0]) for images, _ in dataset)
print(count, plan.streaming, (peak_kib() - before) // 1024)
"""


def peak_growth_mib(cache: Path, budget: int) -> tuple[int, bool, int]:
    """Images delivered, whether they streamed, and the growth of peak RSS (MiB) while loading and iterating."""
    result = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(cache), str(budget)], cwd=REPO_ROOT,
                            capture_output=True, text=True, check=True)
    count, streaming, growth = result.stdout.split()
    return int(count), streaming == "True", int(growth)


@pytest.mark.tf_process
def test_a_split_larger_than_the_budget_streams_in_bounded_memory(tmp_path):
    # 24 shards of 500 images at 75x75x3: 12,000 images, 193 MiB decoded.
    cache = write_cache(tmp_path, counts=[500] * 24, size=75)
    count, streaming, growth = peak_growth_mib(cache, budget=256 << 20)
    assert count == 12_000 and streaming
    count, in_memory, growth_in_memory = peak_growth_mib(cache, budget=4 << 30)
    assert count == 12_000 and not in_memory
    # In memory the whole split is held (193 MiB, more while shards are joined and copied into
    # a tensor). Streamed, a shard (8 MiB) is read at a time; what remains is TF's working set
    # (measured: +74 MiB here, +82 MiB for a split three times larger).
    assert growth_in_memory >= 193, growth_in_memory
    assert growth < 0.6 * 193, f"peak RSS grew by {growth} MiB while streaming (in memory: {growth_in_memory} MiB)"


@pytest.mark.train
def test_training_streams_when_the_split_exceeds_the_budget(demo_copy, workdir, capsys):
    params = tiny_params()
    params["train"]["memory_budget_mb"] = 0
    params["build"]["shard_size"] = 8
    write_params(workdir, params)
    assert audit.main() == 0 and split.main() == 0 and build.main() == 0
    assert train.main() == 0
    output = capsys.readouterr().out
    assert "streaming the train split from 4 shards" in output and "streaming the val split" in output
    assert "epochs 1-2 over 30 training and 15 validation images" in output

    # evaluate streams past the budget too, with the same results as in memory.
    paths = load_params().paths
    assert evaluate.main() == 0
    assert "streaming the test split" in capsys.readouterr().out
    written = [Path(paths.eval_metrics)] + [Path(paths.eval_report_dir) / name for name in
                                            ("predictions.csv", "confusion.json", "per_class.json", "reliability.csv")]
    streamed = [path.read_text() for path in written]
    params["train"]["memory_budget_mb"] = 4096
    write_params(workdir, params)
    assert evaluate.main() == 0
    assert "streaming" not in capsys.readouterr().out
    assert streamed == [path.read_text() for path in written]


def test_every_pipeline_keras_gets_has_the_tf_data_autotuner_off(tmp_path):
    # Destroying an iterator waits for its autotuning thread's current pass: Keras drops a live
    # iterator at every validation and prediction, and on busy cores each wait took seconds.
    from trainwell.training.inputs import make_eval_dataset, make_train_dataset
    from trainwell.training.predict import prediction_dataset

    rng = np.random.default_rng(0)
    split = open_split(cache_dir=write_cache(tmp_path / "cache", counts=[7, 5, 9]), split="train")
    images = rng.integers(0, 256, size=(21, 4, 4, 3), dtype=np.uint8)
    labels = rng.integers(0, 5, size=21)
    datasets = []
    for _ in range(2):  # generated shapes of the plans: sizes, batches, replicas
        count, batch = int(rng.integers(0, 22)), int(rng.integers(1, 9))
        replicas = int(rng.choice([1, 2])) if count >= 2 else 1
        spec = BatchSpec(num_classes=5, batch_size=max(batch, replicas), replicas=replicas)
        datasets.append(make_eval_dataset(images=images[:count], labels=labels[:count], spec=spec))
        if count >= replicas:
            datasets.append(make_train_dataset(images=images[:max(count, 1)], labels=labels[:max(count, 1)],
                                               spec=replace(spec, seed=1, first_epoch=0, epochs=2)))
        datasets.append(make_streaming_dataset(split=split, spec=replace(spec, seed=int(rng.integers(0, 9)), epochs=2)))
        datasets.append(make_streaming_dataset(split=split, spec=spec))
    datasets.append(prediction_dataset(locations=["missing.png"], image_size=4, max_pixels=100, batch_size=2,
                                       failures={}))
    assert all(dataset.options().autotune.enabled is False for dataset in datasets)
