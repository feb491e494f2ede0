"""What a test costs, recorded where it happens: Keras fitting, DVC pipelines, Chromium, venvs, TensorFlow children.

Standard library only: a child Python imports this from sitecustomize before anything else, so it must
cost nothing (no TensorFlow, no trainwell) until a test's process actually fits a model or starts a tool.
tests/conftest.py tells each test's processes what the test is marked with through two environment
variables; a use outside those marks raises at once and is written to the record, so the test fails
naming the marker it lacks even when a child process's failure is swallowed.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.util
import os
import sys

# The markers, by cost; pyproject.toml's marker list and README's development section say the same.
COSTS = {
    "train": "fits a Keras model (Model.fit or train_on_batch), in the test's process or a child Python process",
    "dvc": "runs a DVC pipeline (dvc repro or dvc exp run)",
    "browser": "starts headless Chromium",
    "install": "builds a wheel, creates a venv or pip-installs",
    "tf_process": "starts TensorFlow in a child Python (a trainwell command or a script: seconds of start-up each)",
}
# A test that trains, runs a pipeline, a browser or an install starts TensorFlow children as a matter of course.
IMPLYING_TF_PROCESS = {"train", "dvc", "browser", "install"}
RECORD_VARIABLE = "TRAINWELL_TEST_USES"  # a file: one line per costly use, "cost<TAB>what"
ALLOWED_VARIABLE = "TRAINWELL_TEST_MARKS"  # the test's cost markers, comma-separated

BROWSERS = {"chromium", "chromium-browser", "google-chrome", "chrome"}
PIP_INSTALLING = {"install", "wheel", "download"}


class TierViolation(RuntimeError):
    """A test did costly work its markers do not declare."""


def allowed_costs(markers: set[str]) -> set[str]:
    """The costs a test with these markers may incur."""
    costs = markers & set(COSTS)
    return costs | {"tf_process"} if costs & IMPLYING_TF_PROCESS else costs


def message(cost: str, what: str) -> str:
    return (f"{what}: this test {COSTS[cost]} but is not marked @pytest.mark.{cost}; mark it (or its module's "
            f"pytestmark) so `make test-fast` leaves it out (tests/tier_guard/trainwell_tier_guard.py)")


def use(cost: str, what: str) -> None:
    """Record one costly use for the running test; raise if its markers do not allow it."""
    record = os.environ.get(RECORD_VARIABLE)
    if not record:
        return  # not under the test suite's conftest: nothing to check
    with open(record, "a", encoding="utf-8") as handle:
        handle.write(f"{cost}\t{what}\n")
    if cost not in allowed_costs(set(os.environ.get(ALLOWED_VARIABLE, "").split(","))):
        raise TierViolation(message(cost, what))


def read_uses(record: str) -> list[tuple[str, str]]:
    """The (cost, what) pairs a record file holds, first use of each kind first; none if no file."""
    try:
        with open(record, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except FileNotFoundError:
        return []
    return [tuple(line.split("\t", 1)) for line in dict.fromkeys(lines) if "\t" in line]  # type: ignore[misc]


def _words(args: object) -> list[str]:
    if isinstance(args, (str, bytes, os.PathLike)):
        return os.fsdecode(args).split()  # a shell command line
    try:
        return [os.fsdecode(arg) for arg in args]  # type: ignore[union-attr]
    except TypeError:
        return []


def cost_of_command(args: object) -> tuple[str, str] | None:
    """The cost of starting this command line (a list or a shell string), or None when it is cheap."""
    words = _words(args)
    if not words:
        return None
    program = os.path.basename(words[0])
    rest = words[1:]
    if program.startswith("python") and len(rest) >= 2 and rest[0] == "-m":
        program, rest = rest[1], rest[2:]
    shown = " ".join([program, *rest[:3]])
    if program in BROWSERS:
        return "browser", shown
    if program == "dvc" and (rest[:1] == ["repro"] or rest[:2] == ["exp", "run"]):
        return "dvc", shown
    if program in ("venv", "virtualenv") or (program in ("pip", "pip3") and rest[:1] and rest[0] in PIP_INSTALLING):
        return "install", shown
    return None


def _audit(event: str, args: tuple) -> None:
    if event == "subprocess.Popen":
        found = cost_of_command(args[1])
        if found:
            use(*found)


def _guarded(original, what: str):
    @functools.wraps(original)
    def guarded(self, *args, **kwargs):
        use("train", what)
        return original(self, *args, **kwargs)

    return guarded


def patch_keras(keras_module) -> None:
    """Make keras.Model's fit and train_on_batch report themselves (every model class inherits them)."""
    model = keras_module.Model
    for name in ("fit", "train_on_batch"):
        original = getattr(model, name)
        if not getattr(original, "tier_guarded", False):
            guarded = _guarded(original, f"keras Model.{name}")
            guarded.tier_guarded = True  # type: ignore[attr-defined]
            setattr(model, name, guarded)


def _report_tensorflow() -> None:
    use("tf_process", " ".join([os.path.basename(sys.argv[0]), *sys.argv[1:3]]) + " imported tensorflow")


class _WatchImports(importlib.abc.MetaPathFinder):
    """Finds nothing itself: when `keras` is imported, it wraps the real loader to patch Model afterwards;
    in a child process, importing `tensorflow` is reported first."""

    def __init__(self, *, child: bool) -> None:
        self.child = child

    def find_spec(self, name, path, target=None):
        if name == "tensorflow" and self.child:
            _report_tensorflow()
        if name != "keras":
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        load = spec.loader.exec_module

        def load_then_patch(module):
            load(module)
            patch_keras(module)

        spec.loader.exec_module = load_then_patch  # type: ignore[method-assign]
        return spec


def install(*, child: bool) -> None:
    """Watch this process: Popen through an audit hook, Keras by patching it once it is imported and, in a
    child of the test run (child=True), TensorFlow's import, which the test process itself pays once."""
    if getattr(sys, "_trainwell_tier_guard", False):
        if not child:
            # A pytest-xdist worker is a child Python of the run (sitecustomize installed the guard in
            # child mode) that then becomes a test process itself: it pays TensorFlow's import once,
            # like the main process.
            for finder in sys.meta_path:
                if isinstance(finder, _WatchImports):
                    finder.child = False
        return
    sys._trainwell_tier_guard = True  # type: ignore[attr-defined]
    sys.addaudithook(_audit)
    if "keras" in sys.modules:
        patch_keras(sys.modules["keras"])
    sys.meta_path.insert(0, _WatchImports(child=child))
