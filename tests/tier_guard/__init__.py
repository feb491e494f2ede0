"""The tier guard: costly work a test does is recorded, in its own process and in child Python processes."""
