"""The `trainwell` command as a CI step: help text, output formats and honest exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import faults
from tests.helpers import run, snapshot, tiny_params, write_params
from trainwell.cli import STAGES, main, set_tensorflow_defaults


@pytest.mark.parametrize("command", ["audit", "doctor", "gate", *STAGES])
def test_every_subcommand_explains_itself(command, capsys):
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    assert "--params" in capsys.readouterr().out


def test_top_level_help_lists_stages(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ["audit", "doctor", "gate", *STAGES]:
        assert command in out


def test_usage_error_exits_2(capsys):
    with pytest.raises(SystemExit) as done:
        main(["audit", "--format", "yaml"])
    assert done.value.code == 2


def test_bad_params_exit_2_naming_the_key(workdir, capsys):
    params = tiny_params()
    params["train"]["epochz"] = 3
    write_params(workdir, params)
    assert main(["split"]) == 2
    assert "train.epochz" in capsys.readouterr().err


def test_missing_data_dir_says_what_to_do(workdir, capsys):
    assert main(["audit", "nowhere"]) == 2  # bad usage, not a violated policy
    err = capsys.readouterr().err
    assert "'nowhere' does not exist" in err and "data.dir" not in err  # names what was given
    params = tiny_params()
    params["data"]["dir"] = "gone"
    write_params(workdir, params)
    assert main(["audit"]) == 2
    assert "data.dir 'gone'" in capsys.readouterr().err


def test_standalone_audit_json_and_exit_codes(demo_copy, workdir, capsys):
    assert main(["audit", str(demo_copy), "--format", "json"]) == 0
    clean = json.loads(capsys.readouterr().out)
    assert clean["files_scanned"] == 60 and clean["issues"] == []
    faults.write(demo_copy / "cross" / "half.jpg", faults.truncated_jpeg())
    before = snapshot(workdir)
    assert main(["audit", str(demo_copy), "--format", "json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert {
        key: report["issues"][0][key] for key in ("path", "kind", "severity")
    } == {"path": "cross/half.jpg", "kind": "truncated", "severity": "error"}
    assert report["summary"]["policy_holds"] is False
    assert snapshot(workdir) == before  # standalone mode writes nothing at all


def test_standalone_audit_github_annotations(demo_copy, workdir, capsys):
    faults.write(demo_copy / "cross" / "half.jpg", faults.truncated_jpeg())
    faults.write(demo_copy / "ring" / "really_png.jpg", faults.png_bytes())
    assert main(["audit", str(demo_copy), "--format", "github"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith(f"::error file={demo_copy.as_posix()}/cross/half.jpg,title=truncated::") for line in lines)
    assert any(line.startswith("::warning") and "extension_mismatch" in line for line in lines)


def test_console_script_runs_as_a_subprocess(demo_copy, workdir):
    result = run(["trainwell", "audit", str(demo_copy)], workdir)
    assert "policy holds" in result.stdout
    module = run(["python", "-m", "trainwell", "audit", str(demo_copy), "--format", "json"], workdir)
    assert json.loads(module.stdout)["files_scanned"] == 60


def test_doctor_passes_our_model_and_rejects_the_story_model(built, workdir, tmp_path, capsys):
    assert main(["doctor"]) == 0
    assert "agree" in capsys.readouterr().out

    from tests.test_contract import story_model

    bad = tmp_path / "story.keras"
    story_model("sigmoid").save(bad)
    params = tiny_params(image_size=32)
    write_params(workdir, params)
    assert main(["doctor", "--model", str(bad)]) == 1
    assert "softmax" in capsys.readouterr().err

    params["train"]["output_activation"] = "sigmoid"
    write_params(workdir, params)
    assert main(["doctor"]) == 1
    assert "sigmoid" in capsys.readouterr().err


def test_html_report_is_self_contained_and_groups_findings(demo_copy, workdir, tmp_path):
    import re

    faults.write(demo_copy / "circle" / "cut.jpg", faults.truncated_jpeg())
    faults.write(demo_copy / "ring" / "really_png.jpg", faults.png_bytes())
    (demo_copy / "triangle" / "passwd.jpg").symlink_to("/etc/passwd")
    page = tmp_path / "out" / "audit.html"
    assert main(["audit", str(demo_copy), "--html", str(page)]) == 1
    text = page.read_text()
    # Renders with no network: no scripts, no external stylesheets, images inline.
    assert "<script" not in text and "<link" not in text
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", text)
    sources = re.findall(r'<img alt="" src="([^"]+)"', text)
    assert sources and all(source.startswith("data:image/png;base64,") for source in sources)
    for kind in ("truncated", "extension_mismatch", "symlink_outside"):
        assert f'id="{kind}"' in text
    assert "62 files scanned" in text and "Class balance" in text
    # The truncated file and the escaping link get a placeholder, never a decoded picture.
    assert text.count('<div class="missing">no image</div>') == 2
    assert "root:" not in text  # /etc/passwd was never read


def test_audit_stage_writes_the_html_page(demo_copy, workdir):
    from trainwell.params import load_params

    assert main(["audit"]) == 0
    assert "No findings" in Path(load_params().paths.audit_html).read_text()


def test_missing_model_files_say_what_to_do(built, capsys):
    assert main(["evaluate"]) == 1
    assert "run `dvc repro train` first" in capsys.readouterr().err
    assert main(["doctor", "--model", "nowhere.keras"]) == 2
    assert "'nowhere.keras' does not exist" in capsys.readouterr().err


def test_version_and_verbosity_flags(demo_copy, workdir, capsys):
    from trainwell import __version__

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"trainwell {__version__}"
    assert main(["-q", "audit", str(demo_copy)]) == 0
    assert capsys.readouterr().out == ""  # errors only
    assert main(["audit", "-q", str(demo_copy), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["files_scanned"] == 60  # asked-for JSON still prints
    faults.write(demo_copy / "cross" / "half.jpg", faults.truncated_jpeg())
    assert main(["-q", "audit", str(demo_copy)]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "policy violated" in captured.err
    assert "cross/half.jpg" in captured.err  # -q still says which findings failed the policy
    assert main(["audit", str(demo_copy)]) == 1
    assert "half.jpg" in capsys.readouterr().out


def test_internal_error_is_exit_3_with_one_line_and_a_saved_traceback(workdir, monkeypatch, capsys):
    def broken(**_: object) -> int:
        raise KeyError("a bug")

    monkeypatch.setattr("trainwell.stages.split.main", broken)
    assert main(["split"]) == 3
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "internal error" in err and "KeyError" in err
    saved = Path(err.rsplit("full traceback in ", 1)[1])
    assert "Traceback" in saved.read_text() and "a bug" in saved.read_text()
    saved.unlink()


def test_doctor_never_loads_an_h5_model_without_trust(built, workdir, tmp_path, capsys):
    """An HDF5 model's Lambda layer runs code when Keras loads it; doctor refuses the file unopened."""
    import keras

    marker = tmp_path / "code-ran"

    # What a hostile file carries: Keras stores a lambda's bytecode in HDF5 and runs it at load time.
    # (built from source so the marker path is a constant in the bytecode, not a closure)
    payload = keras.layers.Lambda(eval(f"lambda x: (open({str(marker)!r}, 'w').close(), x)[1]"))
    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(), payload,
                              keras.layers.Dense(5, activation="softmax")])
    model.compile(loss="categorical_crossentropy")
    evil = tmp_path / "evil.h5"
    model.save(evil)
    marker.unlink(missing_ok=True)  # saving traced the Lambda once
    assert main(["doctor", "--model", str(evil)]) == 2
    err = capsys.readouterr().err
    assert "--trust-model" in err and "can run code" in err
    assert not marker.exists()
    renamed = tmp_path / "evil.keras"  # a misleading name does not help: it is not a .keras zip
    renamed.write_bytes(evil.read_bytes())
    assert main(["doctor", "--model", str(renamed)]) != 0
    assert not marker.exists()
    # The file really is hostile: with the explicit flag, loading it runs the payload.
    main(["doctor", "--model", str(evil), "--trust-model"])
    assert marker.exists()


@pytest.mark.tf_process
def test_keras_backports_refuse_another_keras_version():
    code = ("import keras, sys; keras.__version__ = '3.9.1'\n"
            "from trainwell.errors import TrainwellError\n"
            "try:\n    import trainwell.training.keras_backports\n"
            "except TrainwellError as exc:\n    print(exc); sys.exit(7)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 7, result.stderr
    assert "refuse to patch Keras 3.9.1" in result.stdout


def test_a_params_file_that_does_not_exist_is_a_usage_error(workdir, capsys):
    before = snapshot(workdir)
    assert main(["train", "--params", "typo.yaml"]) == 2
    assert "params file 'typo.yaml' does not exist" in capsys.readouterr().err
    assert snapshot(workdir) == before  # nothing trained, nothing overwritten


def test_tensorflow_runs_with_onednn_kernels_unless_the_user_chose_otherwise(monkeypatch):
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    set_tensorflow_defaults(quiet=False)
    assert os.environ["TF_ENABLE_ONEDNN_OPTS"] == "1"
    assert "TF_CPP_MIN_LOG_LEVEL" not in os.environ  # -v shows TensorFlow's own log
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    set_tensorflow_defaults(quiet=True)
    assert os.environ["TF_ENABLE_ONEDNN_OPTS"] == "0"  # the user's choice stands
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3"


def test_the_suite_trains_with_the_kernels_the_command_line_uses():
    # conftest sets the command line's defaults before TensorFlow loads, so a model a test trains
    # in this process is the one `trainwell train` trains (the flag is read once, at import).
    from tensorflow.python.util import _pywrap_util_port

    assert _pywrap_util_port.IsMklEnabled()
