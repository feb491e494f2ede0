"""The tier guard: costly work a test does is recorded, in its own process and in child Python processes."""

import os
import sys

# One module object under both names. A child Python (a pytest-xdist worker among them) loads the guard
# as the top-level `trainwell_tier_guard` from sitecustomize before the tests import it as
# `tests.tier_guard.trainwell_tier_guard`; two copies would mean two TierViolation classes, and a
# violation raised by the first would not be the one a test expects from the second.
if "trainwell_tier_guard" not in sys.modules:
    sys.path.insert(0, os.path.dirname(__file__))
    import trainwell_tier_guard  # noqa: F401  (registered in sys.modules, aliased below)

    sys.path.remove(os.path.dirname(__file__))
sys.modules[f"{__name__}.trainwell_tier_guard"] = sys.modules["trainwell_tier_guard"]
