"""The toolkit's version, in a module of its own so that the bundle writer and the flasher can stamp it without
importing the package root (which reaches the Python API, and through it the bundle code again)."""

__version__ = "0.1.0"
