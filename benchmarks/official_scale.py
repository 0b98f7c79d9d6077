"""The real model's scale on this machine: teacher throughput, an official-width build, the 8B load.

Run: ``python -m benchmarks.official_scale [--parts teacher,build,full] [--out benchmarks/results/official-scale]``.

* ``teacher``: teacher answers per second on the tiny checkpoint (12 shared recordings, the five default
  tasks with the caption capped at 48 tokens as before) for the code before batching (``--before REV``, run
  from a git worktree of that revision), batched greedy, and batched with the original's 2 beams.
* ``build``: ``edge checkpoint official-shape --llm-layers 2`` (full widths, random weights) and ``edge build``
  from it on 26 labelled recordings with the teacher in bfloat16: wall time and peak RSS per command.
* ``full``: the full 32-layer official shape (16 GB of bf16 weights): the teacher and ``edge serve`` load it
  in bfloat16 on the CPU and answer one window; load time, answer time and peak RSS (target <= 18 GB).

Random weights prove what the real model needs (memory, time, that every path loads and answers), not what
it says. Results: ``official-scale.json``, ``.md``, ``.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import machine, pyplot
from testbed.corpus import labelled_subset

ROOT = Path(__file__).resolve().parents[1]
AUDIO = ROOT.parent / "shared" / "data" / "audio"
EDGE = [sys.executable, "-c", "from naturelm_edge.cli import run; run()"]
CAPPED_TASKS = """
[[task]]
id = "common_name"
kind = "common_name"
question = "What is the common name for the focal species in the audio?"
max_new_tokens = 24
[[task]]
id = "scientific_name"
kind = "scientific_name"
question = "What is the scientific name for the focal species in the audio?"
max_new_tokens = 24
[[task]]
id = "detection"
kind = "detection"
question = "What are the common names for the species in the audio, if any?"
max_new_tokens = 32
[[task]]
id = "call_type"
kind = "call_type"
question = "What is the type of vocalization in the audio? Answer with call or song."
max_new_tokens = 8
[[task]]
id = "caption"
kind = "caption"
question = "Caption the audio."
max_new_tokens = 48
"""
DRIVER = """
import json, sys, time
from pathlib import Path
from naturelm_edge.distill.collect import collect
from naturelm_edge.distill.tasks import load_tasks
try:
    from naturelm_edge.models import full as t
except ImportError:  # the revision measured before it, where the full model lived in distill/
    from naturelm_edge.distill import teacher as t
ckpt, audio, tasks, out, files, beams, batch = sys.argv[1:]
files = [Path(f) for f in json.loads(files)]
if hasattr(t, "FullModelOptions"):
    from naturelm_edge.models.placement import Placement
    from naturelm_edge.prompt import GenerationSettings
    options = t.FullModelOptions(Placement("cpu", "float32"), generation=GenerationSettings(num_beams=int(beams)))
    teacher = t.NatureLMTeacher(ckpt, options)
    task_list = [k.resolved(options.generation) for k in load_tasks(Path(tasks))]
    kwargs = {"batch_size": int(batch)}
else:
    teacher, task_list, kwargs = t.NatureLMTeacher(ckpt), load_tasks(Path(tasks)), {}
start = time.perf_counter()
summary = collect(teacher, Path(audio), task_list, Path(out), files=files, **kwargs)
print(json.dumps({"records": summary.asked, "windows": summary.windows, "seconds": time.perf_counter() - start}))
"""
PEAK = "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); " \
       "print('PEAK_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)"


def measured(command: list[str], env: dict | None = None, timeout: float = 7200) -> dict:
    """Run ``command`` in a fresh process; its wall time, peak RSS (GiB) and output."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", PEAK, *command], capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, **(env or {})})
    if result.returncode != 0:
        raise RuntimeError(f"{command[:6]} failed:\n{result.stderr[-3000:]}")
    peak = int(result.stdout.rsplit("PEAK_KB", 1)[1].split()[0])
    return {"seconds": round(time.perf_counter() - start, 1), "peak_rss_gib": round(peak / 2**20, 2),
            "stdout": result.stdout.rsplit("PEAK_KB", 1)[0]}


def teacher_throughput(work: Path, before: str) -> dict:
    from naturelm_edge.audio.files import list_audio
    from naturelm_edge.distill.collect import DEFAULT_BATCH
    from naturelm_edge.sample_data import pick_spread

    files = [str(f) for f in pick_spread(list_audio(AUDIO), 12)]
    ckpt = work / "tiny"
    subprocess.run([*EDGE, "checkpoint", "tiny", str(ckpt)], check=True, capture_output=True)
    tasks = work / "tasks.toml"
    tasks.write_text(CAPPED_TASKS)
    tree = work / "before"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-f", "--detach", str(tree), before], check=True,
                   capture_output=True)
    rows = {}
    try:
        for name, source, beams, batch in (("before (one window at a time, greedy)", tree, 1, 1),
                                           ("batched, greedy", ROOT, 1, DEFAULT_BATCH),
                                           ("batched, 2 beams (the original's default)", ROOT, 2, DEFAULT_BATCH)):
            out = work / f"cache-{len(rows)}"
            run = measured([sys.executable, "-c", DRIVER, str(ckpt), str(AUDIO), str(tasks), str(out),
                            json.dumps(files), str(beams), str(batch)], env={"PYTHONPATH": str(source)})
            row = json.loads(run["stdout"].strip().splitlines()[-1])
            row["records_per_s"] = round(row["records"] / row["seconds"], 2)
            rows[name] = row
            print(f"teacher {name}: {row['records_per_s']} records/s", flush=True)
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], capture_output=True)
    base = next(iter(rows.values()))["records_per_s"]
    return {"recordings": len(files), "revision_before": before, "runs": rows,
            "speedup_greedy": round(rows["batched, greedy"]["records_per_s"] / base, 1)}


def official_build(work: Path) -> dict:
    ckpt = work / "official-2-layers"
    write = measured([*EDGE, "checkpoint", "official-shape", str(ckpt), "--llm-layers", "2"])
    audio = labelled_subset(AUDIO, work / "audio", link=True)
    tasks = work / "build-tasks.toml"
    tasks.write_text(CAPPED_TASKS.split("[[task]]\nid = \"scientific_name\"")[0])
    build = measured([*EDGE, "build", str(ckpt), "--audio", str(audio), "--out", str(work / "bundle"), "--profile",
                      "x86-cpu", "--encoder", "full", "--tasks", str(tasks), "--epochs", "2", "--calibration-windows", "4",
                      "--dtype", "bfloat16", "--max-new-tokens", "8"])
    size = sum(p.stat().st_size for p in ckpt.rglob("*") if p.is_file())
    shutil.rmtree(ckpt)
    return {"checkpoint_gib": round(size / 2**30, 2), "write": _clean(write), "build": _clean(build),
            "recordings": len(list((work / "audio").rglob("*.*"))) - 1}


def full_shape(work: Path) -> dict:
    ckpt = work / "official-32-layers"
    write = measured([*EDGE, "checkpoint", "official-shape", str(ckpt)])
    size = sum(p.stat().st_size for p in ckpt.rglob("*") if p.is_file())
    answer = """
import sys, time, json, numpy as np
from naturelm_edge.models.full import FullModelOptions, NatureLMTeacher
from naturelm_edge.models.placement import Placement
from naturelm_edge.prompt import GenerationSettings
start = time.perf_counter()
teacher = NatureLMTeacher(sys.argv[1], FullModelOptions(Placement("cpu", "bfloat16")))
loaded = time.perf_counter()
fbank = np.random.default_rng(0).standard_normal((1, 998, 128)).astype(np.float32)
reply = teacher.answer(teacher.audio_tokens(fbank), "What is the common name for the focal species in the audio?",
                       GenerationSettings(max_new_tokens=4), 5)[0]
print(json.dumps({"load_s": round(loaded - start, 1), "answer_s": round(time.perf_counter() - loaded, 1),
                  "tokens": len(reply.token_ids)}))
"""
    teacher = measured([sys.executable, "-c", answer, str(ckpt)])
    teacher.update(json.loads(teacher["stdout"].strip().splitlines()[-1]))
    serve = serve_one_window(ckpt, work / "serve-state")
    shutil.rmtree(ckpt)
    return {"checkpoint_gib": round(size / 2**30, 2), "write": _clean(write), "teacher_bf16_cpu": _clean(teacher),
            "serve_bf16_cpu": serve}


def serve_one_window(ckpt: Path, state: Path) -> dict:
    """``edge serve`` in bfloat16 on the CPU answers one escalation; its peak RSS from /proc (VmHWM)."""
    from naturelm_edge.wire.client import post_escalation
    from testbed.serve import Server, request

    start = time.perf_counter()
    server = Server(ckpt, state, "--dtype", "bfloat16", "--device", "cpu", "--max-new-tokens", "4")
    server.start(timeout_s=1800)
    try:
        loaded = time.perf_counter()
        reply = post_escalation(server.url, request("full-shape-1"), timeout_s=1800)
        answered = time.perf_counter()
        status = Path(f"/proc/{server.process.pid}/status").read_text()
        peak = int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1])
    finally:
        server.stop()
    return {"load_s": round(loaded - start, 1), "answer_s": round(answered - loaded, 1),
            "peak_rss_gib": round(peak / 2**20, 2), "answer": reply.get("answer", "")[:60]}


def _clean(run: dict) -> dict:
    return {k: v for k, v in run.items() if k != "stdout"}


def write_outputs(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "official-scale.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# The official scale on this machine", "", f"Machine: {result['machine']['processor']}, "
             f"{result['machine']['cores']} cores. Random weights: these figures say what the real model needs, "
             "not what it answers.", ""]
    if "teacher" in result:
        t = result["teacher"]
        lines += ["## Teacher answers (tiny checkpoint)", "", "| run | records | seconds | records/s |", "|---|---|---|---|"]
        lines += [f"| {name} | {r['records']} | {r['seconds']:.1f} | {r['records_per_s']:.1f} |" for name, r in t["runs"].items()]
        lines += ["", f"Batched greedy: {t['speedup_greedy']}x the records per second of {t['revision_before']} "
                  f"(target 10x) on {t['recordings']} recordings.", ""]
    if "build" in result:
        b = result["build"]
        lines += ["## `edge build` from the official shape with 2 LLM layers (full widths)", "",
                  f"Checkpoint {b['checkpoint_gib']} GiB written in {b['write']['seconds']} s; build on "
                  f"{b['recordings']} recordings (teacher in bf16 on the CPU): {b['build']['seconds']} s, peak RSS "
                  f"{b['build']['peak_rss_gib']} GiB.", ""]
    if "full" in result:
        f = result["full"]
        t, s = f["teacher_bf16_cpu"], f["serve_bf16_cpu"]
        lines += ["## The full 8B shape in bfloat16 on the CPU", "",
                  f"Checkpoint {f['checkpoint_gib']} GiB (Llama base + NatureLM file) written in {f['write']['seconds']} s.",
                  "", "| | load s | one window s | peak RSS GiB (target <= 18) |", "|---|---|---|---|",
                  f"| teacher | {t['load_s']} | {t['answer_s']} | {t['peak_rss_gib']} |",
                  f"| edge serve | {s['load_s']} | {s['answer_s']} | {s['peak_rss_gib']} |", ""]
    lines += ["CUDA: no GPU was lent to this session; the `--device cuda` path is unverified on hardware.", ""]
    (out / "official-scale.md").write_text("\n".join(lines))
    plt = pyplot()
    if plt is None or "teacher" not in result:
        return
    runs = result["teacher"]["runs"]
    fig, ax = plt.subplots(figsize=(7, 2.8))
    ax.barh(list(runs), [r["records_per_s"] for r in runs.values()])
    ax.set_xlabel("teacher records per second (tiny checkpoint, 2 cores)")
    fig.tight_layout()
    fig.savefig(out / "official-scale.png", dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="teacher,build,full")
    parser.add_argument("--before", default="b136103", help="revision whose teacher answered one window at a time")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "official-scale")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (needs ~20 GB for 'full')")
    args = parser.parse_args()
    previous = args.out / "official-scale.json"
    result = json.loads(previous.read_text()) if previous.is_file() else {}
    result["machine"] = machine()
    with tempfile.TemporaryDirectory(dir=args.work) as scratch:
        work = Path(scratch)
        parts = {"teacher": lambda: teacher_throughput(work, args.before), "build": lambda: official_build(work),
                 "full": lambda: full_shape(work)}
        for name in args.parts.split(","):
            result[name] = parts[name]()
            write_outputs(result, args.out)
    print(f"results -> {args.out}")


if __name__ == "__main__":
    main()
