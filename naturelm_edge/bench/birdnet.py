"""BirdNET v2.4 on the same audio, for the side-by-side cost (an optional benchmark extra, never a runtime one).

BirdNET's licence is non-commercial; the model is the teacher adapter's
(:mod:`naturelm_edge.teachers.birdnet`). It runs in a child process so its peak RSS
is its own, with the thread count the profile gives ours. BirdNET reads 3 s chunks at 48 kHz without
overlap (its default), zero-padding the last one; decoding and resampling are counted, as they are for us.

Run alone: ``python -m naturelm_edge.bench.birdnet`` reads its job as JSON on stdin and prints one JSON object.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np

from naturelm_edge.teachers.birdnet import MODEL_FILE, SAMPLE_RATE, BirdNET, model_path, pieces


def measure(recordings: list[tuple[str, float]], threads: int, time_expansion: float = 1.0) -> dict:
    """BirdNET on the first ``seconds`` (real time) of each recording, as ours measured them."""
    from naturelm_edge.audio.decode import stream
    from naturelm_edge.bench.pipeline import peak_rss_mb

    started = time.perf_counter()
    listener = BirdNET(threads, embeddings=False)
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
