"""Class names are folder names: one visible path component, in one spelling; hidden folders are never classes."""

from __future__ import annotations

import random
import unicodedata

import pytest

from tests import faults
from tests.helpers import tiny_params, write_params
from trainwell.cli import main
from trainwell.errors import ParamsError
from trainwell.names import is_folder_name
from trainwell.params import parse_params


def _not_components(seed: int = 0, count: int = 60) -> list[str]:
    """Generated class names that are not one visible folder name: parents, roots, separators,
    hidden names and NUL, alone and inside otherwise ordinary names."""
    rng = random.Random(seed)
    fixed = ["", ".", "..", "/", "//", "/etc", "../x", "../../..", "a/b", "a/", "/a", "a\\b", "..\\x", "C:\\data",
             ".git", ".thumbs", ".DS_Store", "...", ".a.b", "a\0b", "\0"]
    made = []
    for _ in range(count - len(fixed)):
        word = "".join(rng.choice("abcxyz_- é0") for _ in range(rng.randint(1, 6)))
        piece = rng.choice(["/", "\\", "\0", "/../", "./", "/."])
        made.append(rng.choice([word + piece + word, piece + word, word + piece, "." + word]))
    return fixed + made


def _look_alike_pairs() -> list[tuple[str, str]]:
    """Pairs of names that NFC makes one: a composed letter and its decomposition, and a
    compatibility character (Å as ANGSTROM SIGN) that NFC maps onto another."""
    pairs = []
    for letter in "éñüÅçøåàö":
        decomposed = unicodedata.normalize("NFD", letter)
        if decomposed != letter:
            pairs.append((f"caf{letter}", f"caf{decomposed}"))
    pairs.append(("\u212bngstrom", "\u00c5ngstrom"))
    return pairs


@pytest.mark.parametrize("section", ["data", "demo"])
def test_a_class_that_is_not_one_folder_name_is_a_params_error_naming_the_key(workdir, capsys, section):
    """Every generated bad name among good ones is a params error naming `<section>.classes`;
    through the command (a few of them), exit 2 before anything is listed or read."""
    names = _not_components(seed=1 if section == "data" else 2)
    for bad in names:
        assert not is_folder_name(bad)
        with pytest.raises(ParamsError, match=rf"'{section}\.classes': lists .*one folder name"):
            parse_params({section: {"classes": ["circle", bad, "square"]}})
    for bad in names[::12]:
        params = tiny_params()
        params[section]["classes"] = ["circle", bad, "square"]
        write_params(workdir, params)
        assert main(["audit"] if section == "data" else ["demo-data"]) == 2, repr(bad)
        err = capsys.readouterr().err
        assert f"'{section}.classes'" in err and "one folder name" in err, err


def test_look_alike_class_names_in_params_are_refused(workdir, capsys):
    for first, second in _look_alike_pairs():
        assert first != second and unicodedata.normalize("NFC", first) == unicodedata.normalize("NFC", second)
        with pytest.raises(ParamsError) as refused:
            parse_params({"data": {"classes": ["circle", first, second]}})
        assert "'data.classes'" in str(refused.value) and ascii(first) in str(refused.value)
        assert ascii(second) in str(refused.value)
    params = tiny_params()
    params["data"]["classes"] = ["circle", *_look_alike_pairs()[0]]
    write_params(workdir, params)
    assert main(["audit"]) == 2 and "'data.classes'" in capsys.readouterr().err


def test_classes_from_params_never_lead_outside_the_dataset(demo_copy, workdir, capsys):
    """The issue's case: `["..", "c2", "/etc"]` read files outside the dataset; now nothing is read."""
    faults.write(workdir / "data" / "outside.jpg", faults.jpeg_bytes(seed=1))
    params = tiny_params()
    params["data"]["classes"] = ["..", "circle", "/etc"]
    write_params(workdir, params)
    assert main(["audit"]) == 2
    assert "'data.classes'" in capsys.readouterr().err
    assert not (workdir / "reports").exists() and not (workdir / "data" / "audit").exists()


def test_hidden_top_level_folders_and_files_are_not_classes_or_findings(demo_copy, workdir):
    """A dataset kept in git (or by a photo tool) has .git, .thumbs and .DS_Store: none is a
    class, an unknown class, a stray file or a duplicate of anything."""
    from trainwell.audit.dataset import audit_dataset
    from trainwell.params import load_params

    for name in ("HEAD", "config", "objects/ab/cdef", "objects/pack/x.pack"):
        faults.write(demo_copy / ".git" / name, b"git internals\n")
    for image in sorted((demo_copy / "circle").iterdir())[:3]:  # thumbnails: copies of dataset images
        faults.write(demo_copy / ".thumbs" / image.name, image.read_bytes())
    faults.write(demo_copy / ".thumbs" / "orphan.jpg", faults.jpeg_bytes(seed=9))
    faults.write(demo_copy / ".DS_Store", b"\0\0\0\1Bud1")
    (demo_copy / ".link_out").symlink_to("/etc")
    params = load_params()
    visible = sorted(path.name for path in demo_copy.iterdir() if not path.name.startswith("."))
    for classes in (None, visible):
        report = audit_dataset(root=demo_copy, data=params.data.model_copy(update={"classes": classes}),
                               policy=params.audit)
        assert report.classes == visible and report.files_scanned == 60
        assert not [issue for issue in report.issues if issue.path.startswith(".") or "/." in issue.path
                    or issue.kind in ("unknown_class", "missing_class", "stray_file", "label_conflict",
                                      "exact_duplicate", "symlink_outside")]


def test_class_folders_that_differ_only_in_unicode_normalisation_are_refused(demo_copy, workdir, capsys):
    """Folders (or manifest labels) `café` composed and decomposed would be two classes that look
    identical: the audit stops, exit 1, naming both with their code points."""
    for first, second in _look_alike_pairs()[:3]:
        for name in (first, second):
            faults.write(demo_copy / name / "a.jpg", faults.jpeg_bytes(seed=len(name)))
        assert main(["audit"]) == 1
        err = capsys.readouterr().err
        assert ascii(first) in err and ascii(second) in err and "Unicode normalisation" in err
        for name in (first, second):
            (demo_copy / name / "a.jpg").unlink()
            (demo_copy / name).rmdir()
    first, second = _look_alike_pairs()[0]
    manifest = demo_copy / "labels.csv"
    manifest.write_text("path,label\n" + "".join(f"circle/{path.name},{label}\n" for path, label in zip(
        sorted((demo_copy / "circle").iterdir()), [first, second, "circle"] * 4)), encoding="utf-8")
    params = tiny_params()
    params["data"]["manifest"] = str(manifest)
    write_params(workdir, params)
    assert main(["audit"]) == 1
    err = capsys.readouterr().err
    assert ascii(first) in err and ascii(second) in err
