"""storage.project_path: the project's scratch files as every workspace of the project (DVC's queued experiments) finds them."""

from __future__ import annotations

import random
from pathlib import Path

from trainwell import storage


def test_inside_a_queued_experiment_a_relative_path_names_the_projects_file(tmp_path):
    project = tmp_path / "project"
    for workspace in (".dvc/tmp/exps/tmpa1b2", ".dvc/tmp/exps/celery/tmpc3d4", ".dvc/tmp/exps/standalone/tmp9/sub"):
        assert storage.project_path("data/audit/cache.json", cwd=project / workspace) == \
            str(project.resolve() / "data/audit/cache.json")


def test_anywhere_else_and_for_absolute_paths_or_urls_the_path_is_kept(tmp_path):
    rng = random.Random(0)
    parts = ["data", ".dvc", "tmp", "exps", "..", ".", "x y", "é", "tmp1", "exps2", "dvc"]
    absolute = str(tmp_path / "elsewhere" / "cache.json")
    # Generated working folders: only a strict descendant of <project>/.dvc/tmp/exps is a queued workspace.
    for _ in range(300):
        cwd = tmp_path.joinpath(*rng.choices(parts, k=rng.randint(0, 6)))
        resolved = cwd.resolve()
        inside = any(folder.parts[-3:] == (".dvc", "tmp", "exps") and folder != resolved
                     for folder in (resolved, *resolved.parents))
        got = storage.project_path("data/audit/cache.json", cwd=cwd)
        if inside:
            assert Path(got).is_absolute() and got.endswith("/data/audit/cache.json")
            assert resolved.is_relative_to(Path(got).parents[2] / ".dvc" / "tmp" / "exps")
        else:
            assert got == "data/audit/cache.json"
        assert storage.project_path(absolute, cwd=cwd) == absolute
        assert storage.project_path("s3://bucket/cache.json", cwd=cwd) == "s3://bucket/cache.json"
