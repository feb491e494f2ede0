"""Benchmark: seconds per 1,000 images and peak memory of every pipeline stage at 10k, 100k (and 1M) images.

Usage: python benchmarks/scale.py [--sizes 10000 100000] [--full] [--workdir DIR] [--keep]

For each size N it writes N distinct 32x32 JPEGs (blocky random colour layouts plus noise, so no
two share pixels, a pHash or a thumbnail) into 10 class folders with a process pool, then runs
each stage's real entry point in a fresh child process of its own:

- audit: `trainwell audit` as the DVC stage runs it (listing, every file decoded and checked,
  duplicates, near-duplicates, image properties, cache saved, reports written);
- reaudit_unchanged: the same with nothing changed (listing, cache loaded and matched, the
  dataset-level checks; nothing decoded, nothing saved);
- reaudit_1pct: the same after rewriting 1% of the files with new pictures (reported also as
  a share of the full audit; bar: under 5%);
- split, build: the stages (build decodes every file again, into shards);
- train_input: plan_inputs for train and val, the epoch's batch plan and one pass over the
  training batches tf.data would feed fit() (in memory below train.memory_budget_mb, streamed
  by shard above it);
- evaluate: the stage, with a one-layer model standing in for the trained one;
- label_review: the stage with 2 folds of 1 epoch each (the default 5 x 12 would be hours of
  training at 1M; what is measured is the per-image cost and memory of reading, predicting,
  embedding and ranking, which the fold count multiplies), streamed by shard past the budget;
- dataset_checks and cache: where decoding is not what is measured, N synthetic pHashes,
  thumbnails and scores (1% exact copies, 1% near copies): duplicates, near-duplicates and
  image properties over the columns; the audit cache saved and loaded.

Seconds are measured inside the child around the stage alone (imports excluded). Peak RSS is the
child's VmHWM (the stage's own process; the audit's forked checkers are listed apart as
"workers", their largest peak). The growth factor is the per-image cost at the largest N over the
smallest (bar: at most 1.5x); "bytes/file" is the peak RSS added per added file between the
smallest and largest N (the per-file bookkeeping). 1M images need about 5 GB of disk and a
million inodes, and about half an hour on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

CLASSES = 10
SIDE = 32  # pixels: tiny images, so the per-file bookkeeping (not the pixels) is what grows
FILE_STAGES = ("audit", "reaudit_unchanged", "reaudit_1pct", "split", "build", "train_input", "evaluate", "label_review")
SYNTHETIC_STAGES = ("dataset_checks", "cache")
GROWTH_BAR = 1.5
INCREMENTAL_BAR = 0.05


# -- data ------------------------------------------------------------------------------------------


def pictures(count: int, seed: int) -> np.ndarray:
    """`count` distinct SIDE x SIDE RGB pictures: a random 4x4 colour layout blown up, plus noise."""
    rng = np.random.default_rng(seed)
    layout = rng.integers(0, 256, size=(count, 4, 4, 3), dtype=np.uint8)
    blocks = np.repeat(np.repeat(layout, SIDE // 4, axis=1), SIDE // 4, axis=2).astype(np.int16)
    return np.clip(blocks + rng.integers(-12, 13, size=blocks.shape), 0, 255).astype(np.uint8)


def file_path(root: Path, index: int) -> Path:
    return root / f"class{index % CLASSES}" / f"{index:07d}.jpg"


def write_images(root: str, start: int, stop: int, seed: int) -> None:
    """Files start..stop-1, one block of pictures at a time (a pool worker's share)."""
    import cv2

    for block in range(start, stop, 1000):
        count = min(1000, stop - block)
        images = pictures(count, seed=seed * 1_000_003 + block)
        for offset in range(count):
            encoded = cv2.imencode(".jpg", images[offset], [cv2.IMWRITE_JPEG_QUALITY, 90])[1]
            with open(file_path(Path(root), block + offset), "wb") as handle:
                handle.write(encoded.tobytes())


def make_dataset(root: Path, count: int, workers: int) -> float:
    """Write `count` JPEGs under root with a process pool; return the seconds it took."""
    start = time.perf_counter()
    for label in range(CLASSES):
        (root / f"class{label}").mkdir(parents=True, exist_ok=True)
    step = 20_000
    with ProcessPoolExecutor(max_workers=workers) as pool:
        list(pool.map(write_images, [str(root)] * len(range(0, count, step)), range(0, count, step),
                      [min(count, first + step) for first in range(0, count, step)],
                      [0] * len(range(0, count, step))))
    return time.perf_counter() - start


def write_project(project: Path, root: Path) -> None:
    """params.yaml for a project auditing root: defaults, 32x32 images, nothing fails the audit stage."""
    import yaml

    from trainwell.params import Params

    params = Params().model_dump(mode="json")
    params["data"].update({"dir": str(root), "image_size": SIDE})
    params["audit"]["fail_on"] = []  # a property outlier must not stop the run; its cost is still measured
    params["label_review"].update({"folds": 2, "epochs_per_fold": 1})  # see the module docstring
    project.mkdir(parents=True, exist_ok=True)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


# -- stages, each run in a child process -------------------------------------------------------------


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        return int(next(line.split()[1] for line in status if line.startswith(field + ":")))


def _rewrite_one_percent(root: Path, count: int) -> int:
    """Rewrite every 100th file with a picture no run has seen (a fresh seed from the clock)."""
    import cv2

    chosen = list(range(0, count, 100))
    images = pictures(len(chosen), seed=time.time_ns() % 2**32)
    for image, index in zip(images, chosen):
        file_path(root, index).write_bytes(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
    return len(chosen)


def _synthetic_columns(count: int) -> dict[str, np.ndarray]:
    """Audit-cache columns for `count` files: random hashes, 1% exact copies, 1% near copies."""
    from trainwell.audit.file_checks import stored_columns

    rng = np.random.default_rng(count)
    columns = {name: rng.integers(0, 256, size=(count, *empty.shape[1:]), dtype=np.uint8).view(empty.dtype)
               if empty.dtype.kind in "uS" else np.zeros((count, *empty.shape[1:]), empty.dtype)
               for name, empty in stored_columns().items()}
    columns["content"] = rng.integers(1, 256, size=(count, 16), dtype=np.uint8).view("S16").ravel()
    columns["pixel_hash"] = rng.integers(1, 256, size=(count, 16), dtype=np.uint8).view("S16").ravel()
    copies = np.arange(0, count, 100)
    columns["pixel_hash"][copies + 1] = columns["pixel_hash"][copies]  # exact copies: groups of two
    near = np.arange(50, count, 100)
    columns["perceptual_hash"][near + 1] = columns["perceptual_hash"][near] ^ np.uint8(1)
    columns["thumbnail"][near + 1] = columns["thumbnail"][near]
    columns["fine"][near + 1] = columns["fine"][near]
    columns["brightest"][:] = rng.uniform(120, 255, count)
    columns["darkest"][:] = rng.uniform(0, 100, count)
    columns["sharpness"][:] = rng.lognormal(6, 1, count)
    columns["entropy"][:] = rng.uniform(5, 7.5, count)
    return columns


def run_stage(stage: str, project: Path, count: int) -> dict:
    """One stage in this (fresh) process: {seconds, peak_mib, workers_peak_mib, ...}."""
    os.chdir(project)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from trainwell.console import QUIET, set_verbosity
    from trainwell.params import load_params

    set_verbosity(QUIET)  # errors only: the stage's own report is not what is measured
    params = load_params("params.yaml")
    extra: dict = {}
    if stage in ("audit", "reaudit_unchanged", "reaudit_1pct"):
        from trainwell.stages import audit as audit_stage

        if stage == "audit":
            Path(params.paths.audit_cache).unlink(missing_ok=True)
        if stage == "reaudit_1pct":
            extra["changed"] = _rewrite_one_percent(Path(params.data.dir), count)
        action = lambda: audit_stage.main(params_file="params.yaml")  # noqa: E731
    elif stage == "split":
        from trainwell.stages import split as split_stage

        action = lambda: split_stage.main(params_file="params.yaml")  # noqa: E731
    elif stage == "build":
        from trainwell.stages import build as build_stage

        action = lambda: build_stage.main(params_file="params.yaml")  # noqa: E731
    elif stage == "train_input":
        from trainwell.training.inputs import BatchSpec, plan_inputs

        def action() -> None:
            inputs = plan_inputs(cache_dir=params.paths.cache_dir, splits=["train", "val"],
                                 memory_budget_bytes=params.train.memory_budget_mb << 20)
            train, batch = inputs["train"], params.train.batch_size
            extra["streaming"] = train.streaming
            batches = train.epoch_batches(seed=0, epoch=0, batch_size=batch)
            seen = 0
            dataset = train.train_dataset(BatchSpec(num_classes=CLASSES, batch_size=batch, seed=0, first_epoch=0, epochs=1))
            for images, _ in dataset.take(train.steps(batch_size=batch)):
                seen += int(images.shape[0])
            extra["batches"], extra["images_fed"] = len(batches), seen
    elif stage == "evaluate":
        import keras

        from trainwell.stages import evaluate as evaluate_stage

        model = keras.Sequential([keras.Input((SIDE, SIDE, 3)), keras.layers.Rescaling(1 / 255),
                                  keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(CLASSES, activation="softmax")])
        Path(params.paths.model).parent.mkdir(parents=True, exist_ok=True)
        model.save(params.paths.model)
        action = lambda: evaluate_stage.main(params_file="params.yaml")  # noqa: E731
    elif stage == "label_review":
        from trainwell.stages import label_review as label_review_stage

        action = lambda: label_review_stage.main(params_file="params.yaml")  # noqa: E731
    elif stage == "dataset_checks":
        from trainwell.audit.dataset import FileTable, _duplicate_findings, _near_duplicate_findings
        from trainwell.audit.properties import property_findings

        table = FileTable.empty([(f"class{index % CLASSES}/{index:07d}.jpg", f"class{index % CLASSES}")
                                 for index in range(count)])
        table.columns = _synthetic_columns(count)

        def action() -> None:
            duplicates, _ = _duplicate_findings(table)
            near, _, _ = _near_duplicate_findings(table, policy=params.audit, stable=np.zeros(count, bool),
                                                  previous_pairs=[])
            properties, notes = property_findings(table.paths, table.labels, table.columns, policy=params.audit)
            extra["findings"] = len(duplicates) + len(near) + len(properties) + len(notes)
    elif stage == "cache":
        from trainwell.audit.cache import AuditCache

        paths = [f"class{index % CLASSES}/{index:07d}.jpg" for index in range(count)]
        columns = _synthetic_columns(count)
        sizes, mtimes = np.full(count, 3000, np.int64), np.arange(count, dtype=np.int64)
        findings = {path: [("dark", "the brightest 1% ...")] for path in paths[::1000]}
        target = Path("data/audit/synthetic-cache.json")
        target.unlink(missing_ok=True)

        def action() -> None:
            started = time.perf_counter()
            AuditCache(target, params.audit).save(paths=paths, sizes=sizes, mtimes=mtimes, columns=columns,
                                                  findings=findings, near_pairs=[], unchanged=False)
            extra["save_seconds"] = time.perf_counter() - started
            started = time.perf_counter()
            loaded = AuditCache(target, params.audit)
            loaded.match(root=Path("."), paths=paths, sizes=sizes, mtimes=mtimes)
            extra["load_seconds"] = time.perf_counter() - started
            extra["cache_mib"] = sum(file.stat().st_size for file in target.parent.glob(target.name + "*")) / 2**20
    else:
        raise SystemExit(f"unknown stage {stage}")
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # the peak from here on: the stage's own, not the imports' or the setup's
    except OSError:
        pass
    start = time.perf_counter()
    action()
    seconds = time.perf_counter() - start
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"seconds": seconds, "peak_mib": _status_kib("VmHWM") / 1024, "workers_peak_mib": workers / 1024, **extra}


def in_child(stage: str, project: Path, count: int) -> dict:
    done = subprocess.run([sys.executable, __file__, "--run-stage", stage, str(project), str(count)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"stage {stage} at {count} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- driver ----------------------------------------------------------------------------------------


def measure_size(count: int, workdir: Path, stages: list[str], keep: bool) -> dict[str, dict]:
    root, project = workdir / f"images-{count}", workdir / f"project-{count}"
    results: dict[str, dict] = {}
    if any(stage in FILE_STAGES for stage in stages):
        seconds = make_dataset(root, count, workers=os.cpu_count() or 1)
        print(f"  wrote {count:,} JPEGs in {seconds:.0f} s", flush=True)
    write_project(project, root)
    try:
        for stage in stages:
            results[stage] = in_child(stage, project, count)
            result = results[stage]
            print(f"  {stage:<18} {result['seconds']:8.2f} s  {1000 * result['seconds'] / count:7.3f} s/1k  "
                  f"peak {result['peak_mib']:6.0f} MiB  workers {result['workers_peak_mib']:5.0f} MiB  "
                  f"{ {key: value for key, value in result.items() if key not in ('seconds', 'peak_mib', 'workers_peak_mib')} or ''}",
                  flush=True)
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
            shutil.rmtree(project, ignore_errors=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000], help="image counts")
    parser.add_argument("--full", action="store_true", help="also 1,000,000 images (~5 GB of disk, ~30 min)")
    parser.add_argument("--stages", nargs="+", default=[*FILE_STAGES, *SYNTHETIC_STAGES],
                        choices=[*FILE_STAGES, *SYNTHETIC_STAGES], help="stages to run, in this order")
    parser.add_argument("--workdir", type=Path, help="where images and projects go (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the images and projects")
    parser.add_argument("--run-stage", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_stage:
        stage, project, count = args.run_stage
        print(json.dumps(run_stage(stage, Path(project), int(count))))
        return
    sizes = sorted(set(args.sizes) | ({1_000_000} if args.full else set()))
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="trainwell-bench-scale-"))
    workdir.mkdir(parents=True, exist_ok=True)
    table: dict[int, dict[str, dict]] = {}
    try:
        for count in sizes:
            print(f"{count:,} images", flush=True)
            table[count] = measure_size(count, workdir, args.stages, args.keep)
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    smallest, largest = sizes[0], sizes[-1]
    print(f"\n{'stage':<18}" + "".join(f"{f'{count:,} s/1k':>16}{'peak MiB':>10}" for count in sizes)
          + f"{'growth':>8}{'bytes/file':>12}")
    summary = {}
    for stage in args.stages:
        costs = [table[count][stage]["seconds"] / count * 1000 for count in sizes]
        peaks = [table[count][stage]["peak_mib"] for count in sizes]
        growth = costs[-1] / costs[0]
        per_file = (peaks[-1] - peaks[0]) * 2**20 / (largest - smallest) if largest > smallest else 0.0
        cells = "".join(f"{cost:>16.3f}{peak:>10.0f}" for cost, peak in zip(costs, peaks))
        verdict = "" if len(sizes) < 2 else (" PASS" if growth <= GROWTH_BAR else " FAIL")
        print(f"{stage:<18}{cells}{growth:>7.2f}x{per_file:>12.0f}{verdict}")
        summary[stage] = {"seconds_per_1k": dict(zip(sizes, [round(cost, 4) for cost in costs])),
                          "peak_mib": dict(zip(sizes, [round(peak) for peak in peaks])),
                          "growth": round(growth, 2), "bytes_per_file": round(per_file)}
    if "audit" in args.stages and "reaudit_1pct" in args.stages:
        for count in sizes:
            share = table[count]["reaudit_1pct"]["seconds"] / table[count]["audit"]["seconds"]
            print(f"re-audit after changing 1% at {count:,}: {share:.1%} of the full audit (bar: < "
                  f"{INCREMENTAL_BAR:.0%}) {'PASS' if share < INCREMENTAL_BAR else 'FAIL'}")
            summary.setdefault("incremental_share", {})[count] = round(share, 4)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
