"""Stage `build`: decode and resize every split image once into uint8 shards plus a manifest."""

from __future__ import annotations

import os

from trainwell.console import say, shown, warn
from trainwell.data.cache import build_cache
from trainwell.outputs import guard_stage, guarded
from trainwell.params import load_params


@guarded
def main(*, params_file: str = "params.yaml") -> int:
    params = load_params(params_file)
    guard_stage("build", params=params, params_file=params_file)
    cache_manifest = build_cache(
        data_dir=params.data.dir,
        splits_dir=params.paths.splits_dir,
        cache_dir=params.paths.cache_dir,
        image_size=params.data.image_size,
        shard_size=params.build.shard_size,
        workers=params.build.workers or os.cpu_count() or 1,
        max_pixels=params.audit.max_pixels,
        seed=params.build.seed,
    )
    for entry in cache_manifest["splits"].values():
        for skipped in entry["skipped"]:
            warn(f"build: WARNING skipped {shown(skipped['path'])}: {shown(skipped['reason'])}")
    sizes = ", ".join(f"{name} {entry['count']}" for name, entry in cache_manifest["splits"].items())
    say(f"build: cached {sizes} images at {params.data.image_size}x{params.data.image_size} in {shown(params.paths.cache_dir)}")
    return 0
