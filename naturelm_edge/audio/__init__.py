"""Audio front end (numpy, soundfile, scipy only): decode, resample, window, and NatureLM's fbank."""

from naturelm_edge.audio.decode import AudioInfo, load, probe, read_blocks, stream
from naturelm_edge.audio.fbank import DEFAULT_SETTINGS, FbankSettings, fbank
from naturelm_edge.audio.frontend import window_features
from naturelm_edge.audio.resample import StreamResampler, resample
from naturelm_edge.audio.windows import Window, WindowSpec, iter_windows, prepare

__all__ = [
    "AudioInfo",
    "DEFAULT_SETTINGS",
    "FbankSettings",
    "StreamResampler",
    "Window",
    "WindowSpec",
    "fbank",
    "iter_windows",
    "load",
    "prepare",
    "probe",
    "read_blocks",
    "resample",
    "stream",
    "window_features",
]
