"""Power, temperatures, memory and load on Jetsons, from NVIDIA's ``tegrastats`` (sampled while the benchmark runs).

Lines differ by JetPack release: Orin prints ``VDD_IN 4820mW/4820mW`` with a date in front, Xavier
``VDD_IN 4302/4302``, the Nano ``POM_5V_IN 2093/2093``. Each rail is ``NAME current/average``; the board's
input power is ``VDD_IN`` or ``POM_5V_IN`` when present, else the sum of the rails (AGX Orin).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field

RAM = re.compile(r"RAM (\d+)/(\d+)MB")
CPU = re.compile(r"CPU \[([^\]]*)\]")
GPU = re.compile(r"GR3D_FREQ (\d+)%")
TEMPERATURE = re.compile(r"\b([A-Za-z][A-Za-z0-9_]*)@(-?\d+(?:\.\d+)?)C\b")
RAIL = re.compile(r"\b([A-Z][A-Z0-9_]+) (\d+)(?:mW)?/(\d+)(?:mW)?\b")
INPUT_RAILS = ("VDD_IN", "POM_5V_IN")


@dataclass
class Sample:
    ram_used_mb: int
    ram_total_mb: int
    cpu_load: list[float]  # per online core, percent
    gpu_load: float | None
    rails_mw: dict[str, int] = field(default_factory=dict)
    temperatures_c: dict[str, float] = field(default_factory=dict)

    @property
    def power_mw(self) -> int | None:
        for name in INPUT_RAILS:
            if name in self.rails_mw:
                return self.rails_mw[name]
        return sum(self.rails_mw.values()) or None


def parse(line: str) -> Sample | None:
    """One tegrastats line, or None when it is not one (tegrastats prints nothing else, but be safe)."""
    ram = RAM.search(line)
    if not ram:
        return None
    cpu = CPU.search(line)
    loads = [float(c.split("%")[0]) for c in cpu.group(1).split(",") if "%" in c] if cpu else []
    gpu = GPU.search(line)
    rails = {name: int(current) for name, current, _ in RAIL.findall(line[ram.end():]) if name not in ("RAM", "SWAP")}
    # -256 C is how tegrastats shows a sensor that is powered off (AGX Orin's CV and GPU when idle)
    temperatures = {name.lower(): float(t) for name, t in TEMPERATURE.findall(line) if float(t) > -200}
    return Sample(int(ram.group(1)), int(ram.group(2)), loads, float(gpu.group(1)) if gpu else None, rails, temperatures)


def summarise(samples: list[Sample], seconds: float, audio_s: float) -> dict:
    """Average power and energy per hour of audio over ``seconds`` of benchmarking ``audio_s`` of audio."""
    powers = [s.power_mw for s in samples if s.power_mw is not None]
    mean_mw = sum(powers) / len(powers) if powers else None
    return {
        "samples": len(samples),
        "ram_peak_mb": max((s.ram_used_mb for s in samples), default=None),
        "cpu_load_mean": (sum(sum(s.cpu_load) / len(s.cpu_load) for s in samples if s.cpu_load) / len(samples)) if samples else None,
        "gpu_load_mean": (sum(s.gpu_load for s in samples if s.gpu_load is not None) / len(samples)) if samples else None,
        "power_mean_w": mean_mw / 1000 if mean_mw is not None else None,
        "energy_wh_per_audio_hour": (mean_mw / 1000 * seconds / 3600) / (audio_s / 3600) if mean_mw and audio_s else None,
        "rails": sorted({name for s in samples for name in s.rails_mw}),
        "max_temperature_c": {name: max(s.temperatures_c[name] for s in samples if name in s.temperatures_c)
                              for name in sorted({n for s in samples for n in s.temperatures_c})},
    }


class TegraStats:
    """Runs ``tegrastats --interval MS`` in the background while the benchmark runs (no-op without it)."""

    def __init__(self, interval_ms: int = 500, command: str = "tegrastats") -> None:
        self.path = shutil.which(command)
        self.interval_ms = interval_ms
        self.samples: list[Sample] = []
        self._process: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None
        self.started = self.stopped = 0.0

    @property
    def available(self) -> bool:
        return self.path is not None

    def __enter__(self) -> TegraStats:
        self.started = time.perf_counter()
        if self.path:
            self._process = subprocess.Popen([self.path, "--interval", str(self.interval_ms)],
                                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            self._thread = threading.Thread(target=self._read, daemon=True)
            self._thread.start()
        return self

    def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            sample = parse(line)
            if sample:
                self.samples.append(sample)

    def __exit__(self, *_: object) -> None:
        self.stopped = time.perf_counter()
        if self._process:
            self._process.terminate()
            self._process.wait(timeout=5)
        if self._thread:
            self._thread.join(timeout=5)
