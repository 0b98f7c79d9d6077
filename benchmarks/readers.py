"""edge-run's Raven table as opensoundscape reads it: times, frequencies in real Hz and labels.

Run: ``python -m benchmarks.readers [--bundle DIR] [--out benchmarks/results/readers]``. crowsetta and pandas
read the outputs in the test suite (tests/test_outputs.py); opensoundscape cannot live in the project's
environment (0.13 requires torchaudio and torchvision builds that pin another torch than the one this project
pins), so this benchmark gives it an environment of its own: a venv under ``~/.cache/naturelm-edge/readers-venv``
with torch 2.13 and opensoundscape installed without its training dependencies, importing only its
``annotations`` module (the package's ``__init__`` pulls in lightning, torchvision and wandb, which the reader
never touches). edge-run writes events for a toad chorus and a 10x time-expanded bat recording; opensoundscape's
``BoxedAnnotations.from_raven_files`` must return one box per stored event with the same start, end, band and
label. Writes readers.json/.md/.png.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from benchmarks.common import machine, pyplot, recordings_dir
from benchmarks.soak import EDGE_RUN, demo_bundle

OPENSOUNDSCAPE = "opensoundscape==0.13.2"
# what opensoundscape.annotations and opensoundscape.utils import at module level
READER_DEPS = ["pandas", "numpy", "scipy", "scikit-learn", "librosa", "matplotlib", "crowsetta"]
RECORDINGS = (("opensoundscape/great_plains_toad.wav", 1), ("whombat/XC820302-Noctilio_leporinus-2013.01.08-CL00088_A_15.wav", 10))
# the reader runs in the other venv; the package's __init__ is bypassed by registering a bare package first
READER_SCRIPT = r"""
import importlib.util, json, sys, types
spec = importlib.util.find_spec("opensoundscape")
package = types.ModuleType("opensoundscape")
package.__path__ = list(spec.submodule_search_locations)
sys.modules["opensoundscape"] = package
from opensoundscape.annotations import BoxedAnnotations
boxes = BoxedAnnotations.from_raven_files([sys.argv[1]], annotation_column="Common Name").df
print(json.dumps([{"start": float(r.start_time), "end": float(r.end_time), "low": float(r.low_f),
                   "high": float(r.high_f), "label": r.annotation} for r in boxes.itertuples()]))
"""


def reader_env(venv: Path) -> Path:
    """The venv's python, made once: torch 2.13 first (the CPU build), opensoundscape without dependencies."""
    python = venv / "bin" / "python"
    if not (venv / ".ready").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(python), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, "torch==2.13.0"], check=True)
        subprocess.run([*pip, "--no-deps", OPENSOUNDSCAPE], check=True)
        subprocess.run([*pip, *READER_DEPS], check=True)
        (venv / ".ready").touch()
    return python


def compare(events: list[dict], boxes: list[dict]) -> dict:
    """Per event: does opensoundscape's box carry its times, band (real Hz) and label?"""
    rows = []
    for event, box in zip(events, boxes):
        expansion = 10 if "whombat" in event["source"] else 1
        end = round(event["offset_s"] + event["duration_s"], 3)
        rows.append({"source": Path(event["source"]).name, "start": box["start"], "end": box["end"],
                     "low": box["low"], "high": box["high"], "label": box["label"],
                     "times_ok": abs(box["start"] - event["offset_s"]) < 1e-6 and abs(box["end"] - end) < 1e-6,
                     "band_ok": box["low"] == 0.0 and box["high"] == 8000.0 * expansion,
                     "label_ok": box["label"] == (event["label"] or event["answer"])})
    return {"events": len(events), "boxes": len(boxes), "rows": rows,
            "all_ok": len(events) == len(boxes) > 0 and all(r["times_ok"] and r["band_ok"] and r["label_ok"]
                                                             for r in rows)}


def measure(bundle: Path, audio: Path, work: Path) -> dict:
    from naturelm_edge.station.data import StationData

    out = work / "run"
    if out.exists():
        import shutil

        shutil.rmtree(out)
    for name, expansion in RECORDINGS:
        subprocess.run([*EDGE_RUN, "--bundle", str(bundle), str(audio / name), "--out", str(out), "--profile",
                        "x86-cpu", "--escalate", "off", "--no-gate", "-q", "--time-expansion", str(expansion)],
                       check=True)
    python = reader_env(Path.home() / ".cache" / "naturelm-edge" / "readers-venv")
    read = subprocess.run([str(python), "-c", READER_SCRIPT, str(out / "events.selections.txt")], check=True,
                          capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    boxes = json.loads(read.stdout.strip().splitlines()[-1])
    stored = list(reversed(StationData(out).events(limit=1_000_000)))  # the store, read as the station reads it
    return {"reader": OPENSOUNDSCAPE, "machine": machine(), **compare(stored, boxes)}


def write(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "readers.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# edge-run's Raven table read by {result['reader']} (BoxedAnnotations.from_raven_files)", "",
             f"{result['events']} events stored, {result['boxes']} boxes read; every box matches its event "
             f"(times, band in real Hz, label): **{'yes' if result['all_ok'] else 'NO'}**", "",
             "| recording | start s | end s | low Hz | high Hz | label | times | band | label |",
             "|---|---:|---:|---:|---:|---|:-:|:-:|:-:|"]
    mark = {True: "ok", False: "WRONG"}
    lines += [f"| {r['source']} | {r['start']:g} | {r['end']:g} | {r['low']:g} | {r['high']:g} | {r['label']} | "
              f"{mark[r['times_ok']]} | {mark[r['band_ok']]} | {mark[r['label_ok']]} |" for r in result["rows"]]
    (out / "readers.md").write_text("\n".join(lines) + "\n")
    plt = pyplot()
    if plt is None:
        return
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, source in zip(axes, sorted({r["source"] for r in result["rows"]})):
        for r in (r for r in result["rows"] if r["source"] == source):
            ax.add_patch(plt.Rectangle((r["start"], r["low"]), r["end"] - r["start"], r["high"] - r["low"],
                                       fill=False, edgecolor="tab:green" if r["label_ok"] else "tab:red"))
        rows = [r for r in result["rows"] if r["source"] == source]
        ax.set_xlim(0, max(r["end"] for r in rows) * 1.05)
        ax.set_ylim(0, max(r["high"] for r in rows) * 1.1)
        ax.set_title(source[:40], fontsize=9)
        ax.set_xlabel("time (s, real)")
        ax.set_ylabel("frequency (Hz, real)")
    fig.suptitle("Boxes as opensoundscape reads them (green: label matches the event)")
    fig.tight_layout()
    fig.savefig(out / "readers.png", dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=None)
    parser.add_argument("--audio", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "readers")
    args = parser.parse_args()
    audio = recordings_dir(args.audio)
    work = Path(os.environ.get("TMPDIR", "/tmp")) / "naturelm-readers"
    work.mkdir(exist_ok=True)
    result = measure(args.bundle or demo_bundle(work), audio, work)
    write(result, args.out)
    print((args.out / "readers.md").read_text())
    if not result["all_ok"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
