"""Keras and TensorFlow start without Keras's optional scikit-learn, pandas and matplotlib integrations, which trainwell never uses.

Keras 3 imports each of them at start-up when it is installed (`keras.wrappers` for scikit-learn
estimators, pandas for DataFrame inputs to fit(), matplotlib.pyplot for its plotting helpers),
each inside `try: import ... except ImportError`. cleanlab brings scikit-learn and pandas with
trainwell, and matplotlib is often installed beside it, so every command that starts TensorFlow
paid for them: measured on the 2-core machine of docs/development.md, `import tensorflow, keras`
took 7.1-8.6 s in a venv of trainwell alone and 5.2-6.1 s without the two (1.9 s saved); where
matplotlib is installed too, pyplot added 0.7 s more. While TensorFlow or Keras is first imported,
those three are marked absent (None in sys.modules: an import of them raises ImportError, which
Keras catches); the marks are lifted when that import ends, so cleanlab and anything else
imports them normally afterwards. Keras's scikit-learn wrappers, DataFrame inputs and plotting
helpers are then unavailable in that process; trainwell uses none of them. Only the `trainwell`
command arranges this (cli.run, a process of its own): a program calling trainwell's functions or
cli.main keeps Keras as it comes.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from collections.abc import Sequence
from types import ModuleType

OPTIONAL_INTEGRATIONS = ("sklearn", "pandas", "matplotlib")
# Whichever of these is imported first imports the other (tensorflow imports keras, keras tensorflow).
_STARTERS = ("tensorflow", "keras")


class _WithoutOptionalIntegrations(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps the loader of the first TensorFlow or Keras import, then steps aside."""

    def find_spec(self, name: str, path: Sequence[str] | None, target: ModuleType | None = None):
        if name not in _STARTERS:
            return None
        try:
            sys.meta_path.remove(self)  # once: the rest of the process imports as usual
        except ValueError:  # another thread's first import of the other one took it a moment ago
            return None
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        load = spec.loader.exec_module

        def load_without_optional_integrations(module: ModuleType) -> None:
            marked = [integration for integration in OPTIONAL_INTEGRATIONS if integration not in sys.modules]
            for integration in marked:
                sys.modules[integration] = None  # type: ignore[assignment]
            try:
                load(module)
            finally:
                for integration in marked:
                    if sys.modules.get(integration, "") is None:
                        del sys.modules[integration]

        spec.loader.exec_module = load_without_optional_integrations  # type: ignore[method-assign]
        return spec


def start_keras_without_optional_integrations() -> None:
    """From now on, the first import of TensorFlow or Keras in this process skips the optional integrations
    (a no-op once either is imported, or when already arranged)."""
    if any(name in sys.modules for name in _STARTERS):
        return
    if any(isinstance(finder, _WithoutOptionalIntegrations) for finder in sys.meta_path):
        return
    sys.meta_path.insert(0, _WithoutOptionalIntegrations())
