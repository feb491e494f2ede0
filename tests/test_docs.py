"""The documentation: the site builds strictly and offline, and the README stays an introduction."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
# The README is a user's first contact: what trainwell is, the two commands, a first project, and
# where the manual is. Past this it is a manual again (it was 892 lines).
README_MAX_LINES = 200


def _nav_pages() -> list[str]:
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text())
    return [next(iter(entry.values())) for entry in config["nav"]]


def test_the_site_builds_with_every_link_and_reference_resolved(tmp_path):
    site = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-d", str(site)],
                          cwd=REPO, capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    for page in _nav_pages():
        built = site / ("index.html" if page == "index.md" else page.removesuffix(".md") + "/index.html")
        assert built.is_file(), page
    # The API reference is read from the docstrings: the page names every name `trainwell` exports.
    api = (site / "api" / "index.html").read_text()
    assert "audit_folder" in api and "DivergenceGuard" in api and "plan_inputs" in api
    # Offline: no page loads a script, style, font or image from the network (links out are fine).
    remote = re.compile(r'<(?:script|img|iframe)[^>]+src="https?://|<link[^>]+href="https?://[^"]+\.(?:css|js|woff2?)"'
                        r'|<link[^>]+rel="(?:stylesheet|preconnect|preload)"[^>]+href="https?://')
    for page in site.rglob("*.html"):
        assert not remote.search(page.read_text()), page


def test_every_page_is_in_the_site_and_linked_from_the_readme():
    pages = {path.name for path in (REPO / "docs").glob("*.md")}
    assert pages == set(_nav_pages()), pages ^ set(_nav_pages())
    readme = (REPO / "README.md").read_text()
    linked = set(re.findall(r"\(docs/([a-z-]+\.md)\)", readme))
    assert pages - {"index.md", "changelog.md"} <= linked, pages - linked


def test_the_readme_is_an_introduction_with_the_two_commands():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= README_MAX_LINES, len(readme.splitlines())
    assert "make repro" in readme and "make test" in readme
