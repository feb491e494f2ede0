"""Splits larger than the memory budget stream from the cache shard by shard: same contract, bounded memory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from pipeline import audit, build, split, train
from pipeline.dataset import (
    make_streaming_dataset,
    open_split,
    plan_inputs,
    read_npy_tensor,
    streaming_epoch_batches,
    streaming_steps,
)
from tests.conftest import REPO_ROOT, tiny_params, write_params


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
    (folder / "paths.txt").write_text("".join(f"file{index}.jpg\n" for index in range(start)))
    manifest = {"classes": list("abcde"), "image_shape": [size, size, 3], "splits": {"train": {"shards": shards}}}
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
    dataset = make_streaming_dataset(split=split_data, num_classes=5, batch_size=16, seed=seed, first_epoch=0, epochs=2)
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
    for (images, labels), indices in zip(batches, seen):
        assert np.argmax(labels.numpy(), axis=1).tolist() == [index % 5 for index in indices]


def test_the_memory_budget_decides_what_streams(tmp_path):
    cache = write_cache(tmp_path, counts=[40, 40])  # 80 images x 48 bytes = 3,840 bytes
    assert not plan_inputs(cache_dir=cache, splits=["train"], memory_budget_bytes=4 * 3840)["train"].streaming
    assert plan_inputs(cache_dir=cache, splits=["train"], memory_budget_bytes=4 * 3840 - 1)["train"].streaming


# Peak RSS from /proc (VmHWM, this process's own address space): getrusage's ru_maxrss survives
# exec, so a child of a large pytest process would start from the parent's peak.
PEAK_SCRIPT = """
import sys
import tensorflow as tf
from pipeline.dataset import plan_inputs

def peak_kib():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))

tf.data.Dataset.range(3).map(lambda x: x + 1).reduce(tf.constant(0, tf.int64), lambda a, b: a + b)  # runtime up first
before = peak_kib()
plan = plan_inputs(cache_dir=sys.argv[1], splits=["train"], memory_budget_bytes=int(sys.argv[2]))["train"]
dataset = plan.train_dataset(seed=0, num_classes=5, batch_size=256, first_epoch=0, epochs=1)
count = sum(int(images.shape[0]) for images, _ in dataset)
print(count, plan.streaming, (peak_kib() - before) // 1024)
"""


def peak_growth_mib(cache: Path, budget: int) -> tuple[int, bool, int]:
    """Images delivered, whether they streamed, and the growth of peak RSS (MiB) while loading and iterating."""
    result = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(cache), str(budget)], cwd=REPO_ROOT,
                            capture_output=True, text=True, check=True)
    count, streaming, growth = result.stdout.split()
    return int(count), streaming == "True", int(growth)


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
