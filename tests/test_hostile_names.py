"""A path is data, not a line: any name the filesystem allows survives audit -> quarantine -> split -> build."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
from PIL import Image

from tests import faults
from tests.helpers import tiny_params, write_params
from trainwell.data.splits import SPLITS, read_split_csv
from trainwell.outputs import read_rows
from trainwell.params import load_params
from trainwell.stages import audit, build, split

# Characters that broke line-based lists, CSV fields, comment handling or encodings.
FRAGMENTS = ["\n", "\r", "\r\n", "\u2028", "\u0085", "#", ",", '"', "'", "%", " ", "\t", ";", "ünï", "::", "\\"]


def hostile_names(count: int, seed: int = 0) -> list[str]:
    """Seeded file names mixing the dangerous fragments, plus one name that is not valid UTF-8."""
    rng = random.Random(seed)
    names = {"#leading-hash", os.fsdecode(b"not-utf8-\xff\xfe")}
    while len(names) < count:
        parts = rng.choices(FRAGMENTS, k=rng.randint(1, 4)) + [f"n{len(names)}"]
        rng.shuffle(parts)
        names.add("".join(parts))
    return sorted(names)


def test_any_file_name_round_trips_and_the_quarantine_holds(demo_copy, workdir):
    params = tiny_params()
    params["audit"]["fail_on"] = []  # quarantine, but let the pipeline go on
    write_params(workdir, params)
    classes = sorted(path.name for path in demo_copy.iterdir() if path.is_dir())
    names = hostile_names(24)
    for index, name in enumerate(names):  # fresh pictures under hostile names, spread over the classes
        faults.write(demo_copy / classes[index % len(classes)] / f"{name}.jpg", faults.jpeg_bytes(seed=100 + index))
    # The case that escaped the quarantine: a pixel copy of a square, filed as a circle, its name
    # holding a newline, so a line-based list split it in two and `split` put it in train.
    square = next((demo_copy / "square").glob("*.jpg"))
    conflict = demo_copy / "circle" / "x\nconflict.png"
    Image.fromarray(np.asarray(Image.open(square))).save(conflict)

    assert audit.main() == 0 and split.main() == 0 and build.main() == 0
    paths = load_params().paths
    quarantined = {row["path"] for row in read_rows(paths.quarantine, columns=["path"])}
    assert "circle/x\nconflict.png" in quarantined
    rows = {name: read_split_csv(Path(paths.splits_dir) / f"{name}.csv") for name in SPLITS}
    listed = [path for name in SPLITS for path, _ in rows[name]]
    assert not quarantined & set(listed)
    assert len(listed) == len(set(listed)) == 60 + len(names) + 1 - len(quarantined)
    assert {f"{classes[index % len(classes)]}/{name}.jpg" for index, name in enumerate(names)} <= set(listed)
    assert all((demo_copy / path).is_file() for path in listed)  # every listed path names a real file
    manifest = json.loads((Path(paths.cache_dir) / "manifest.json").read_text())
    for name in SPLITS:
        cached = json.loads((Path(paths.cache_dir) / name / "paths.json").read_text())
        # Row i of the cache is this file, with its own label (the cache's order is a seeded shuffle).
        assert sorted(cached) == sorted(path for path, _ in rows[name])
        labels = np.concatenate([np.load(Path(paths.cache_dir) / name / shard["labels"])
                                 for shard in manifest["splits"][name]["shards"]])
        label_of = dict(rows[name])
        assert [manifest["classes"][label] for label in labels.tolist()] == [label_of[path] for path in cached]
        assert manifest["splits"][name]["count"] == len(cached)


def test_text_report_keeps_one_line_per_finding_whatever_the_names(demo_copy, capsys):
    from trainwell.cli import main

    names = hostile_names(40, seed=1) + ["y\n::error title=INJECTED::pwned"]
    for index, name in enumerate(names):
        faults.write(demo_copy / "ring" / f"{name}.jpg", faults.truncated_jpeg(seed=index))
    assert main(["-v", "audit", str(demo_copy)]) == 1  # -v: every finding, not a few per kind
    lines = capsys.readouterr().out.splitlines()
    assert [line for line in lines if line.startswith(("ERROR ", "WARNING ", "INFO "))] == ["ERROR   truncated: 41 files"]
    findings = [line for line in lines if line.startswith("  ") and ".jpg: " in line]
    assert len(findings) == len(names)  # each truncated file is exactly one line
    assert not any(line.startswith("::") for line in lines)  # no line reads as a workflow command
    assert any("y\\n::error title=INJECTED::pwned.jpg" in line for line in findings)
