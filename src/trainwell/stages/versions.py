"""Stage `versions`: record the installed trainwell and the libraries behind its numbers, so an upgrade re-runs the stages."""

from __future__ import annotations

import json
from importlib import metadata

from trainwell import __version__
from trainwell.console import say, shown
from trainwell.outputs import guard_stage, guarded, write_bytes_atomically
from trainwell.params import load_params

# Distributions whose version can change a stage's output: decoding, resizing, training, metrics.
LIBRARIES = ("tensorflow", "tensorflow-io", "keras", "numpy", "opencv-python-headless", "pillow", "simplejpeg",
             "tifffile", "albumentations", "cleanlab", "scikit-learn", "scipy")


def installed_versions() -> dict[str, str]:
    """trainwell's version and each library's, or "not installed"; read from package metadata (no imports)."""
    versions = {"trainwell": __version__}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


@guarded
def main(*, params_file: str = "params.yaml") -> int:
    params = load_params(params_file)
    guard_stage("versions", params=params, params_file=params_file)
    versions = installed_versions()
    write_bytes_atomically(params.paths.versions, (json.dumps(versions, indent=2) + "\n").encode())
    say(f"versions: trainwell {versions['trainwell']}, tensorflow {versions['tensorflow']}, "
        f"keras {versions['keras']} recorded in {shown(params.paths.versions)}")
    return 0
