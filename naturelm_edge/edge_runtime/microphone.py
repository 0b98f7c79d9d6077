"""Live capture through PortAudio (pyaudio): the device's native rate and channels, resampled here.

The PortAudio callback only enqueues bytes (it must never block); a full queue counts an overflow instead
of stalling the audio thread. When the device disappears (unplugged USB microphone, driver reset) the
stream is closed and reopened with exponential back-off, without restarting the process.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np

from naturelm_edge.audio.resample import StreamResampler
from naturelm_edge.edge_runtime.sources import Source
from naturelm_edge.errors import EdgeError

log = logging.getLogger(__name__)


@dataclass
class Device:
    index: int
    name: str
    channels: int
    rate: int


def _pyaudio():  # noqa: ANN202 - pyaudio module
    try:
        import pyaudio
    except ImportError as err:
        raise EdgeError("microphone input needs the 'mic' extra: pip install 'naturelm-edge[mic]' "
                        "(and apt install portaudio19-dev).") from err
    return pyaudio


def list_devices() -> list[Device]:
    pyaudio = _pyaudio()
    audio = pyaudio.PyAudio()
    try:
        devices = []
        for i in range(audio.get_device_count()):
            info = audio.get_device_info_by_index(i)
            if info["maxInputChannels"] > 0:
                devices.append(Device(i, info["name"], int(info["maxInputChannels"]), int(info["defaultSampleRate"])))
        return devices
    finally:
        audio.terminate()


def find_device(wanted: str | None) -> Device:
    """By index, by name substring (the last match: plug wrappers are listed after their raw device)."""
    devices = list_devices()
    if not devices:
        raise EdgeError("no audio input device found; check the microphone and `edge-run --list-devices`.")
    if wanted is None:
        return devices[0]
    if wanted.isdigit():
        for device in devices:
            if device.index == int(wanted):
                return device
    matches = [d for d in devices if wanted.lower() in d.name.lower()]
    exact = [d for d in matches if d.name.lower() == wanted.lower()]
    if exact or matches:
        return (exact or matches)[-1]
    raise EdgeError(f"no input device matches {wanted!r}; available: {', '.join(d.name for d in devices)}.")


@dataclass
class MicStats:
    overflows: int = 0
    reopens: int = 0
    seconds: float = 0.0


class Microphone:
    """Blocks of model-rate mono audio from a PortAudio input, surviving device loss."""

    def __init__(self, wanted: str | None, sample_rate: int, block_s: float = 0.1, max_seconds: float | None = None,
                 stall_s: float = 2.0, max_backoff_s: float = 30.0, queue_blocks: int = 200,
                 time_expansion: float = 1.0) -> None:
        self.wanted, self.sample_rate, self.block_s = wanted, sample_rate, block_s
        self.time_expansion = time_expansion  # an ultrasonic mic slowed N times, as bat detectors do
        self.max_seconds, self.stall_s, self.max_backoff_s = max_seconds, stall_s, max_backoff_s
        self.queue: queue.Queue[bytes] = queue.Queue(maxsize=queue_blocks)
        self.stats = MicStats()
        self.stopped = False
        self._pa = _pyaudio()  # bound once: the audio callback must stay as cheap as possible
        self.device: Device | None = None

    def _callback(self, data: bytes, frames: int, info: dict, status: int):  # noqa: ANN202 - PortAudio signature
        if status & self._pa.paInputOverflow:
            self.stats.overflows += 1
        try:
            self.queue.put_nowait(data)
        except queue.Full:
            self.stats.overflows += 1
        return None, self._pa.paContinue

    def _open(self):  # noqa: ANN202 - (PyAudio, Stream)
        pyaudio = self._pa
        device = find_device(self.wanted)
        channels = min(device.channels, 2)
        audio = pyaudio.PyAudio()
        try:
            stream = audio.open(format=pyaudio.paInt16, channels=channels, rate=device.rate, input=True,
                                input_device_index=device.index, frames_per_buffer=int(device.rate * self.block_s),
                                stream_callback=self._callback)
        except Exception:
            audio.terminate()
            raise
        self.device = Device(device.index, device.name, channels, device.rate)
        return audio, stream

    def blocks(self) -> Iterator[np.ndarray]:
        backoff = 1.0
        while not self.stopped:
            try:
                audio, stream = self._open()
            except (EdgeError, OSError) as err:
                self.stats.reopens += 1
                log.warning("microphone unavailable (%s); retrying in %.0f s", err, backoff)
                time.sleep(backoff)
                backoff = min(self.max_backoff_s, backoff * 2)
                continue
            backoff = 1.0
            resampler = StreamResampler(self.device.rate / self.time_expansion, self.sample_rate)
            try:
                yield from self._read(stream, resampler)
            finally:
                stream.stop_stream() if stream.is_active() else None
                stream.close()
                audio.terminate()
            tail = resampler.flush()
            if tail.size:
                yield tail
            if self.stopped:
                return
            self.stats.reopens += 1  # the stream died: reopen

    def _read(self, stream, resampler: StreamResampler) -> Iterator[np.ndarray]:  # noqa: ANN001
        channels = self.device.channels
        while not self.stopped:
            try:
                data = self.queue.get(timeout=self.stall_s)
            except queue.Empty:
                if not stream.is_active():
                    return
                continue
            samples = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
            mono = samples.reshape(-1, channels).mean(axis=1)
            self.stats.seconds += mono.shape[0] / self.device.rate
            out = resampler.process(mono)
            if out.size:
                yield out
            if self.max_seconds is not None and self.stats.seconds >= self.max_seconds:
                self.stopped = True


def mic_source(mic: Microphone) -> Source:
    """The microphone as a source dated by the wall clock; stopping it ends the current block."""
    started = datetime.now(timezone.utc)
    name = mic.wanted or "default"

    def stop() -> None:
        mic.stopped = True

    return Source(f"mic:{name}:{started.isoformat()}", started, mic.time_expansion, mic.blocks, stop,
                  lambda: mic.stats.overflows)
