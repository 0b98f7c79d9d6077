"""NatureLM-audio in PyTorch (export side only: the device never imports this package)."""

from naturelm_edge.models.checkpoint import LoadedCheckpoint, load, resolve
from naturelm_edge.models.config import PRESETS, BEATsConfig, NatureLMConfig, preset
from naturelm_edge.models.naturelm import AudioEncoder, NatureLM

__all__ = [
    "PRESETS",
    "AudioEncoder",
    "BEATsConfig",
    "LoadedCheckpoint",
    "NatureLM",
    "NatureLMConfig",
    "load",
    "preset",
    "resolve",
]
