"""Benchmark: trainwell's `train` and `label-review` against the scripts a user would otherwise run, end to end, in one run.

Usage: python benchmarks/end_to_end.py [--dataset mnist|demo|sklearn_digits|both] [--runs 3] [--epochs 15]
                                       [--flip-fraction 0.05] [--flip-seed 123] [--tutorial-onednn] [--skip-train]
                                       [--skip-review] [--keep FOLDER]

Datasets: `mnist` is benchmarks/real_data.py's held-back set (5,131 real 28x28 MNIST digits 0-4,
PNG); `sklearn_digits` its 901 scikit-learn digits 0-4 (32x32, the issue's small real set); `demo` is trainwell's demo set (synthetic JPEGs, as `trainwell demo` writes them). Each is
audited, split and built by trainwell once (the shipped params: data.image_size 48, Adam 1e-3,
15 epochs unless --epochs); the baseline reads the very same files of each split, copied into
class folders, at the same side.

Training, alternately `--runs` times each, every run a fresh process:
- trainwell: `trainwell train` with the default params (guard, epoch backup, op determinism on),
  run k at `train.seed: k` (a user's seed is arbitrary, and the tutorial is unseeded: each of
  its runs is another draw, so one fixed seed against several draws would compare luck);
- the Keras tutorial's script (benchmarks/tutorial_train.py): image_dataset_from_directory +
  cache + shuffle + prefetch, model.fit, the same network, epochs, batch and learning rate, on
  the kernels TensorFlow picks for this CPU (`trainwell` turns oneDNN's on where TensorFlow
  would not; --tutorial-onednn gives the tutorial them too, to see what else differs).
Per run: seconds per epoch, the median of epochs 2..N (from the time each epoch's Keras line
appears; this 2-core VM's cores are now and then taken for a second, which a mean would charge
to whoever ran then), wall seconds (trainwell: start to exit; the tutorial: start to its model
saved, before its test evaluation), the stall from the last epoch's line to the model saved, and
test accuracy (trainwell's through `trainwell evaluate`, untimed). Times are compared as the
ratio of the medians over runs and of the best runs; accuracy as the difference of the means,
in points (bar: trainwell at most 0.5 points below).

Label review, on a copy of the dataset with --flip-fraction of the files moved into a wrong class
folder (before the split, so flips land in every split), alternately `--runs` times each:
- trainwell: `trainwell label-review` (default params: every split reviewed);
- benchmarks/cleanlab_review.py: cleanlab find_label_issues on 5-fold out-of-fold probabilities of
  the same small CNN at the data's native size, 5 epochs.
Precision, recall and F1 of the flagged files against the flipped ones, over every split, and
wall seconds; and label review's wall time against trainwell's own `train` wall time (bar <= 1).
Every figure is printed with its ratio to the baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # for tests.label_faults
sys.path.insert(0, str(HERE))  # for real_data

import numpy as np  # noqa: E402
import yaml  # noqa: E402

from trainwell.params import Params  # noqa: E402

DEFAULTS = Params()  # the shipped params: both contenders train at their side, step size and epochs

# Keras' line at each epoch's end with verbose=2: "99/99 - 3s - 30ms/step - accuracy: ...".
EPOCH_END = re.compile(r"^\s*\d+/\d+ - \d+m?s")
NATIVE_SIZE = {"mnist": 28, "sklearn_digits": 32, "demo": DEFAULTS.demo.image_size}


@dataclass
class Timed:
    """A finished process: its output lines with the second each appeared, and its wall time."""

    lines: list[tuple[float, str]] = field(default_factory=list)
    wall: float = 0.0
    returncode: int = 0

    def first(self, text: str) -> float:
        return next(stamp for stamp, line in self.lines if text in line)

    def epoch_ends(self) -> list[float]:
        return [stamp for stamp, line in self.lines if EPOCH_END.match(line)]


def run_timed(command: list[str], cwd: Path, **variables: str) -> Timed:
    env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="3", **variables)
    started = time.monotonic()
    result = Timed()
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    for line in process.stdout:
        result.lines.append((time.monotonic() - started, line.rstrip("\n")))
    result.returncode = process.wait()
    result.wall = time.monotonic() - started
    if result.returncode != 0:
        tail = "\n".join(line for _, line in result.lines[-30:])
        raise SystemExit(f"{' '.join(command)} exited {result.returncode} in {cwd}:\n{tail}")
    return result


def trainwell(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "trainwell", *arguments]


def write_images(name: str, folder: Path) -> None:
    if name != "demo":
        import real_data

        real_data.write(name, folder)
    else:
        from trainwell.data.demo import generate

        generate(out_dir=folder, demo=DEFAULTS.demo)  # what `dvc repro`'s demo_data stage writes


def make_project(folder: Path, images: Path, epochs: int) -> dict[str, int]:
    """A trainwell project on `images` with the shipped defaults but `epochs`, audited, split and
    built; returns images per split."""
    params = DEFAULTS.model_dump(mode="json")
    params["data"]["dir"] = str(images)
    params["train"]["epochs"] = epochs
    folder.mkdir(parents=True)
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for stage in ("audit", "split", "build"):
        run_timed(trainwell("-q", stage), folder)
    manifest = json.loads((folder / "data" / "cache" / "manifest.json").read_text())
    return {name: split["count"] for name, split in manifest["splits"].items()}


def split_rows(project: Path, name: str) -> list[dict[str, str]]:
    with (project / "data" / "splits" / f"{name}.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def class_folders(project: Path, images: Path, target: Path) -> None:
    """Each split's files, hard-linked into target/<split>/<label>/ for the tutorial's loader."""
    for name in ("train", "val", "test"):
        for row in split_rows(project, name):
            link = target / name / row["label"] / row["path"].replace("/", "__")
            link.parent.mkdir(parents=True, exist_ok=True)
            os.link(images / row["path"], link)


@dataclass
class TrainRun:
    per_epoch: float
    wall: float
    stall: float
    accuracy: float
    kernels: str = ""  # the tutorial's own report: "oneDNN on" or "oneDNN off"


def median_epoch(ends: list[float]) -> float:
    """The median of the epochs after the first (the first compiles), from the epochs' end times."""
    return statistics.median(later - earlier for earlier, later in zip(ends, ends[1:])) if len(ends) > 1 else 0.0


def set_seed(project: Path, seed: int) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"]["seed"] = seed
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def trainwell_train(project: Path, seed: int) -> TrainRun:
    shutil.rmtree(project / "models", ignore_errors=True)
    set_seed(project, seed)
    timed = run_timed(trainwell("train"), project)
    ends = timed.epoch_ends()
    run_timed(trainwell("-q", "evaluate"), project)
    accuracy = json.loads((project / "metrics" / "eval.json").read_text())["accuracy"]
    return TrainRun(per_epoch=median_epoch(ends), wall=timed.wall,
                    stall=timed.first("model saved to") - ends[-1], accuracy=accuracy)


def tutorial_train(folders: Path, epochs: int, workspace: Path, onednn: bool) -> TrainRun:
    model = workspace / "tutorial.keras"
    model.unlink(missing_ok=True)
    timed = run_timed([sys.executable, str(HERE / "tutorial_train.py"), str(folders / "train"), str(folders / "val"),
                       str(model), "--test-dir", str(folders / "test"), "--epochs", str(epochs),
                       "--image-size", str(DEFAULTS.data.image_size),
                       "--learning-rate", str(DEFAULTS.train.learning_rate)], workspace,
                      **({"TF_ENABLE_ONEDNN_OPTS": "1"} if onednn else {}))
    ends, saved = timed.epoch_ends(), timed.first("saved")
    accuracy = float(next(line.split()[-1] for _, line in timed.lines if line.startswith("test accuracy")))
    kernels = next(line for _, line in timed.lines if line.startswith("kernels:")).removeprefix("kernels: ")
    return TrainRun(per_epoch=median_epoch(ends), wall=saved, stall=saved - ends[-1], accuracy=accuracy,
                    kernels=kernels)


def values(numbers: list[float]) -> str:
    return " / ".join(f"{value:.4g}" for value in numbers)


def ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.2f}" if theirs else "n/a"


def compare_training(project: Path, folders: Path, args: argparse.Namespace, workspace: Path) -> list[TrainRun]:
    ours: list[TrainRun] = []
    theirs: list[TrainRun] = []
    for number in range(args.runs):
        # Alternating, so drifting machine load falls on both alike; the order flips every round.
        order = ("trainwell", "tutorial") if number % 2 == 0 else ("tutorial", "trainwell")
        for who in order:
            if who == "trainwell":
                ours.append(trainwell_train(project, seed=number))
            else:
                theirs.append(tutorial_train(folders, args.epochs, workspace, args.tutorial_onednn))
        print(f"  round {number + 1}: " + "; ".join(
            f"{name} {run.per_epoch:.2f} s/epoch, wall {run.wall:.1f} s, stall {run.stall:.1f} s, "
            f"test accuracy {run.accuracy:.4f}" for name, run in (("trainwell", ours[-1]), ("tutorial", theirs[-1]))),
            flush=True)
    print(f"  TensorFlow kernels: trainwell oneDNN {'off' if os.environ.get('TF_ENABLE_ONEDNN_OPTS') == '0' else 'on'} "
          f"(the command's default); tutorial {theirs[0].kernels} "
          f"({'--tutorial-onednn' if args.tutorial_onednn else 'TensorFlow default for this CPU'})")
    print(f"  {'':26s} {'trainwell train':>26s} {'tutorial script':>26s}  ratio of medians, of best (bar <= 1)")
    for label, pick in (("seconds per epoch (2..N)", lambda run: run.per_epoch), ("wall seconds", lambda run: run.wall),
                        ("last epoch -> model saved", lambda run: run.stall)):
        mine, baseline = [pick(run) for run in ours], [pick(run) for run in theirs]
        print(f"  {label:26s} {values(mine):>26s} {values(baseline):>26s}"
              f"   {ratio(statistics.median(mine), statistics.median(baseline))}, "
              f"{ratio(min(mine), min(baseline))}")
    mine, baseline = [run.accuracy for run in ours], [run.accuracy for run in theirs]
    difference = 100 * (statistics.mean(mine) - statistics.mean(baseline))
    print(f"  {'test accuracy':26s} {values(mine):>26s} {values(baseline):>26s}"
          f"   mean {statistics.mean(mine):.4f} vs {statistics.mean(baseline):.4f}: {difference:+.2f} points "
          f"(bar >= -0.5)")
    return ours


def flipped_copy(images: Path, target: Path, fraction: float, seed: int) -> dict[str, str]:
    from tests.label_faults import flip_labels

    shutil.copytree(images, target)
    return flip_labels(target, fraction=fraction, rng=np.random.default_rng(seed))


def scores(flagged: set[str], flips: set[str]) -> tuple[float, float, float]:
    hits = len(flagged & flips)
    precision = hits / len(flagged) if flagged else float("nan")
    recall = hits / len(flips) if flips else float("nan")
    f1 = 2 * precision * recall / (precision + recall) if hits else 0.0
    return precision, recall, f1


def compare_review(name: str, images: Path, args: argparse.Namespace, workspace: Path,
                   train_walls: list[float]) -> None:
    flipped_images = workspace / "images_flipped"
    flips = set(flipped_copy(images, flipped_images, args.flip_fraction, args.flip_seed))
    project = workspace / "project_flipped"
    counts = make_project(project, flipped_images, args.epochs)
    print(f"  {len(flips)} of {sum(counts.values())} labels flipped ({args.flip_fraction:.0%}), in every split",
          flush=True)
    results: dict[str, list[tuple[float, float, float, float]]] = {"trainwell": [], "cleanlab": []}
    for number in range(args.runs):
        order = ("trainwell", "cleanlab") if number % 2 == 0 else ("cleanlab", "trainwell")
        for who in order:
            if who == "trainwell":
                timed = run_timed(trainwell("label-review"), project)
                with (project / "reports" / "labels" / "suspects.csv").open(newline="") as handle:
                    flagged = {row["path"] for row in csv.DictReader(handle)}
            else:
                out = workspace / "cleanlab_issues.csv"
                timed = run_timed([sys.executable, str(HERE / "cleanlab_review.py"), str(flipped_images), str(out),
                                   "--image-size", str(NATIVE_SIZE[name])], workspace)
                with out.open(newline="") as handle:
                    flagged = {row["path"] for row in csv.DictReader(handle)}
            results[who].append((*scores(flagged, flips), timed.wall))
        print("  round " + str(number + 1) + ": " + "; ".join(
            f"{who} precision {p:.3f} recall {r:.3f} F1 {f:.3f} in {s:.1f} s"
            for who, (p, r, f, s) in ((who, results[who][-1]) for who in ("trainwell", "cleanlab"))), flush=True)
    print(f"  {'':14s} {'trainwell label-review':>30s} {'cleanlab script':>30s} {'ratio':>8s}")
    for index, label in enumerate(("precision", "recall", "F1", "seconds")):
        mine = [run[index] for run in results["trainwell"]]
        baseline = [run[index] for run in results["cleanlab"]]
        print(f"  {label:14s} {' / '.join(f'{v:.3f}' for v in mine):>30s} "
              f"{' / '.join(f'{v:.3f}' for v in baseline):>30s} "
              f"{ratio(statistics.median(mine), statistics.median(baseline)):>8s}")
    if train_walls:
        review = statistics.median(run[3] for run in results["trainwell"])
        print(f"  label review / trainwell train wall time: {review:.1f} / {statistics.median(train_walls):.1f} s = "
              f"{ratio(review, statistics.median(train_walls))} (bar <= 1.0)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=["mnist", "demo", "sklearn_digits", "both"], default="both",
                        help="both: mnist and demo; sklearn_digits: scikit-learn's 901 digits 0-4 (real_data.py)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each contender, alternating")
    parser.add_argument("--epochs", type=int, default=DEFAULTS.train.epochs)
    parser.add_argument("--flip-fraction", type=float, default=0.05)
    parser.add_argument("--flip-seed", type=int, default=123, help="which files are flipped (another draw)")
    parser.add_argument("--tutorial-onednn", action="store_true",
                        help="run the tutorial with TF_ENABLE_ONEDNN_OPTS=1 too (default: as TensorFlow chooses)")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--skip-review", action="store_true")
    parser.add_argument("--keep", metavar="FOLDER", help="work in this new folder and keep it")
    args = parser.parse_args()
    root = Path(args.keep or tempfile.mkdtemp(prefix="trainwell-bench-e2e-")).resolve()
    names = ["mnist", "demo"] if args.dataset == "both" else [args.dataset]
    print(f"{os.cpu_count()} CPU cores; load average {os.getloadavg()[0]:.1f} at the start", flush=True)
    try:
        for name in names:
            workspace = root / name
            images = workspace / "images"
            write_images(name, images)
            train_walls: list[float] = []
            if not args.skip_train:
                project = workspace / "project"
                counts = make_project(project, images, args.epochs)
                class_folders(project, images, workspace / "tutorial_folders")
                print(f"{name}: train {counts['train']} / val {counts['val']} / test {counts['test']} images at "
                      f"{DEFAULTS.data.image_size}x{DEFAULTS.data.image_size}, {args.epochs} epochs, batch 32, Adam "
                      f"{DEFAULTS.train.learning_rate:g}; {args.runs} alternating runs each", flush=True)
                train_walls = [run.wall for run in compare_training(project, workspace / "tutorial_folders", args,
                                                                   workspace)]
            if not args.skip_review:
                print(f"{name}: label review", flush=True)
                compare_review(name, images, args, workspace, train_walls)
        print(f"load average {os.getloadavg()[0]:.1f} at the end")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
