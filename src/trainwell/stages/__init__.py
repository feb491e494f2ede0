"""Thin entry points, one per DVC stage or command: read params, call the library, write outputs. Only the CLI loads them."""
