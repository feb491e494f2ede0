"""Loaded by every child Python of a test run (tests/conftest.py puts this folder on PYTHONPATH): the tier guard."""

import trainwell_tier_guard

trainwell_tier_guard.install(child=True)
