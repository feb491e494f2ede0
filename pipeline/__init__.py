"""trainwell: the DVC pipeline stages, the shared input pipeline and the `trainwell` command."""
