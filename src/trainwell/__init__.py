"""trainwell: audited image data, a GPU-feeding tf.data pipeline and a classifier that cannot silently diverge.

The library API (the same objects the `trainwell` command uses), loaded on first use so that
`import trainwell` stays cheap and does not start TensorFlow:

    report = trainwell.audit_folder("images/")          # AuditReport: .issues, .to_json(), .to_html()
    problems = trainwell.check_model(model, num_classes=5)  # head/loss/labels contract, before training
    model.fit(..., callbacks=[trainwell.DivergenceGuard(num_classes=5)])
    inputs = trainwell.plan_inputs(cache_dir="data/cache", splits=["train", "val"], memory_budget_bytes=4 << 30)

Every name of the API, with the module that documents it (`help(trainwell.audit.dataset)`; those
under trainwell.training import TensorFlow):

    audit_folder, audit_dataset     trainwell.audit.dataset
    AuditReport                     trainwell.audit.report
    check_model, check_contract     trainwell.training.contract
    DivergenceGuard, TrainingDiverged   trainwell.training.guard
    plan_inputs, BatchSpec          trainwell.training.inputs
    Params, load_params             trainwell.params
    TrainwellError, ContractError   trainwell.errors
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

# name -> module that defines it
_API = {
    "audit_folder": "trainwell.audit.dataset",
    "audit_dataset": "trainwell.audit.dataset",
    "AuditReport": "trainwell.audit.report",
    "check_model": "trainwell.training.contract",
    "check_contract": "trainwell.training.contract",
    "ContractError": "trainwell.errors",
    "DivergenceGuard": "trainwell.training.guard",
    "TrainingDiverged": "trainwell.training.guard",
    "plan_inputs": "trainwell.training.inputs",
    "BatchSpec": "trainwell.training.inputs",
    "Params": "trainwell.params",
    "load_params": "trainwell.params",
    "TrainwellError": "trainwell.errors",
}
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'trainwell' has no attribute '{name}'")


def __dir__() -> list[str]:
    # Only what is loaded: help(trainwell) and tab completion read every name dir() lists, and
    # the API names would start TensorFlow (seconds, and its log lines). The docstring lists them.
    return ["__version__"]
