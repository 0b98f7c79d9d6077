"""NatureLM-audio in PyTorch (export side only: the device never imports this package)."""

from naturelm_edge.models.checkpoint import LoadedCheckpoint, full_model_parameters, load, resolve
from naturelm_edge.models.config import PRESETS, BEATsConfig, NatureLMConfig, preset
from naturelm_edge.models.naturelm import AudioEncoder, NatureLM

__all__ = [
    "PRESETS",
    "AudioEncoder",
    "BEATsConfig",
    "LoadedCheckpoint",
    "NatureLM",
    "NatureLMConfig",
    "full_model_parameters",
    "load",
    "preset",
    "resolve",
]
