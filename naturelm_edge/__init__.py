"""naturelm-edge: NatureLM-audio on field recorders."""

__version__ = "0.1.0"
