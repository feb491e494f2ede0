"""`trainwell plots`: `dvc plots show` as a page that renders with no network.

`dvc plots show` writes HTML that loads vega, vega-lite and vega-embed from a CDN, so on an
offline machine (or in a locked-down CI) the page is blank. This command fetches the exact
versions dvc-render expects once from the npm registry (`npm pack`), caches them, and passes
dvc an HTML template with the libraries inlined.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from trainwell.console import say
from trainwell.errors import TrainwellError

# The versions dvc-render's VegaRenderer pins in its CDN script tags.
LIBRARIES = (("vega", "5.20.2", "build/vega.min.js"), ("vega-lite", "5.2.0", "build/vega-lite.min.js"),
             ("vega-embed", "6.18.2", "build/vega-embed.min.js"))


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "trainwell" / "vega"


def fetch_libraries(cache_dir: Path) -> list[Path]:
    """The three minified builds, from the cache or fetched with `npm pack` into it."""
    wanted = [cache_dir / f"{name}-{version}.min.js" for name, version, _ in LIBRARIES]
    if all(path.exists() for path in wanted):
        return wanted
    npm = shutil.which("npm")
    if npm is None:
        raise TrainwellError("`trainwell plots` needs npm (Node.js) once, to fetch vega for offline pages; install "
                             "Node.js, or use `dvc plots show` on a machine with internet access")
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        specs = [f"{name}@{version}" for name, version, _ in LIBRARIES]
        packed = subprocess.run([npm, "pack", *specs, "--silent"], cwd=scratch, capture_output=True, text=True)
        if packed.returncode != 0:
            raise TrainwellError(f"npm pack {' '.join(specs)} failed: {packed.stderr.strip()[-500:]}")
        for (name, version, member), target in zip(LIBRARIES, wanted):
            with tarfile.open(Path(scratch) / f"{name}-{version}.tgz") as archive:
                source = archive.extractfile(f"package/{member}")
                if source is None:
                    raise TrainwellError(f"{name}@{version} from npm has no {member}")
                target.write_bytes(source.read())
    return wanted


def offline_template(libraries: list[Path]) -> str:
    """A dvc-render page template with the libraries inlined and no {scripts} slot (no CDN tags)."""
    scripts = "\n".join(f"<script>{path.read_text()}</script>" for path in libraries)
    return ("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>DVC plots (offline)</title>"
            f"{scripts}<style>table{{border-spacing:15px}}</style></head><body>{{plot_divs}}</body></html>")


def main(*, out: str = "dvc_plots", cache_dir: str | None = None) -> int:
    libraries = fetch_libraries(Path(cache_dir) if cache_dir else default_cache_dir())
    with tempfile.TemporaryDirectory() as scratch:
        template = Path(scratch) / "offline.html"
        template.write_text(offline_template(libraries))
        shown = subprocess.run(["dvc", "plots", "show", "--html-template", str(template), "--out", out],
                               capture_output=True, text=True)
    if shown.returncode != 0:
        raise TrainwellError(f"dvc plots show failed: {shown.stderr.strip()[-800:]}")
    say(f"plots: {Path(out) / 'index.html'} renders with no network (vega inlined)")
    return 0
