"""Supervised training of the cascade's detection stage (torch); the device runs it from ``edge_runtime.detector``."""
