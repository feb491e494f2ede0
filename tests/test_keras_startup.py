"""Keras starts without its optional scikit-learn, pandas and matplotlib integrations, and they import normally afterwards."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.helpers import tool_env
from trainwell.keras_startup import start_keras_without_optional_integrations

# Each script is a fresh Python: the first import of TensorFlow or Keras happens there.
STARTED_FIRST = textwrap.dedent("""
    import json, sys
    from trainwell.keras_startup import OPTIONAL_INTEGRATIONS, start_keras_without_optional_integrations
    start_keras_without_optional_integrations()
    start_keras_without_optional_integrations()  # a second call arranges nothing more
    import {first}
    import keras
    absent = [name for name in OPTIONAL_INTEGRATIONS if name in sys.modules]
    from keras.src.trainers.data_adapters import array_slicing
    from keras.src.wrappers import sklearn_wrapper
    skipped = [array_slicing.pandas is None, sklearn_wrapper.sklearn is None]
    # Afterwards they import as usual (cleanlab needs scikit-learn and pandas; matplotlib is not a
    # dependency, so it may be missing), and Keras still works.
    import importlib, importlib.util, pandas, sklearn.base
    installed = [name for name in OPTIONAL_INTEGRATIONS if importlib.util.find_spec(name) is not None]
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    print(json.dumps({{"imported_during_start": absent, "skipped": skipped,
                      "after": [type(importlib.import_module(name)).__name__ for name in installed],
                      "installed": installed,
                      "finders_left": [type(f).__name__ for f in sys.meta_path if "Optional" in type(f).__name__],
                      "prediction": model.predict(pandas.DataFrame([[1.0, 2.0, 3.0]]).to_numpy(), verbose=0).shape}}))
""")

IMPORTED_BEFORE = textwrap.dedent("""
    import json
    import pandas
    from trainwell.keras_startup import start_keras_without_optional_integrations
    start_keras_without_optional_integrations()
    import keras
    from keras.src.trainers.data_adapters import array_slicing
    print(json.dumps({"pandas_kept": array_slicing.pandas is pandas}))
""")


# The console entry point (`trainwell ...`) arranges it before its command first imports Keras.
THROUGH_THE_COMMAND = textwrap.dedent("""
    import json, sys
    from trainwell import cli

    def command(argv):
        import keras
        from keras.src.trainers.data_adapters import array_slicing
        print(json.dumps({"imported": sorted(set(sys.modules) & {"sklearn", "pandas", "matplotlib"}),
                          "pandas_skipped": array_slicing.pandas is None}))
        return 0

    cli.main = command
    cli.run([])
""")


def _run_script(script: str, cwd: Path | None = None) -> dict:
    """What a fresh Python running `script` printed last, as JSON."""
    result = subprocess.run([sys.executable, "-c", script], cwd=cwd, env=tool_env(), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.tf_process
@pytest.mark.parametrize("first", ["tensorflow", "keras"])
def test_keras_starts_without_the_optional_integrations_which_import_normally_afterwards(first):
    said = _run_script(STARTED_FIRST.format(first=first))
    assert said["imported_during_start"] == [] and said["skipped"] == [True, True]
    assert said["after"] == ["module"] * len(said["installed"]) and {"sklearn", "pandas"} <= set(said["installed"])
    assert said["finders_left"] == [] and said["prediction"] == [1, 2]


@pytest.mark.tf_process
def test_an_integration_imported_before_keras_is_left_as_it_is():
    assert _run_script(IMPORTED_BEFORE) == {"pandas_kept": True}


@pytest.mark.tf_process
def test_the_trainwell_command_starts_keras_without_them():
    assert _run_script(THROUGH_THE_COMMAND) == {"imported": [], "pandas_skipped": True}


def test_a_program_calling_cli_main_keeps_its_keras_as_it_comes(tmp_path):
    # cli.main in a test or a notebook: only the console entry point (cli.run) arranges anything. A
    # fresh Python, as this test process has imported Keras already (nothing would be arranged here).
    script = ("import json, sys; from trainwell import cli; before = list(sys.meta_path); cli.main(['gate']); "
              "print(json.dumps({'keras': 'keras' in sys.modules, 'same_finders': sys.meta_path == before}))")
    assert _run_script(script, cwd=tmp_path) == {"keras": False, "same_finders": True}


def test_nothing_is_arranged_once_keras_is_imported():
    import keras  # noqa: F401  (this test process has imported it already; the import makes sure)

    before = list(sys.meta_path)
    start_keras_without_optional_integrations()
    assert sys.meta_path == before
