"""trainwell test suite."""
