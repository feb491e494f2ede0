"""Stage `demo_data`: write the deterministic synthetic five-class image set, the embedded default dataset."""

from __future__ import annotations

from trainwell.console import say, shown
from trainwell.data.demo import generate
from trainwell.outputs import guard_stage, guarded
from trainwell.params import load_params


@guarded
def main(*, params_file: str = "params.yaml") -> int:
    params = load_params(params_file)
    guard_stage("demo_data", params=params, params_file=params_file)
    count = generate(out_dir=params.paths.demo_dir, demo=params.demo)
    say(f"demo_data: wrote {count} images in {len(params.demo.classes)} classes to {shown(params.paths.demo_dir)}")
    return 0
