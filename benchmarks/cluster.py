"""Beyond one machine on Ray: windows per second against workers, scaling efficiency, Ray's overhead against the
single process on the same work, and how long a season of teacher answers takes on 1, 8 and 64 workers.

Run: ``python -m benchmarks.cluster [--bundle DIR] [--audio DIR] [--repeat 6] [--out benchmarks/results/cluster]``.
Two jobs, each the same work four ways (one process without Ray; a local Ray with 1 worker; with 2; and a
two-node cluster started with ``ray start``, a head node without CPUs for tasks on one core and a worker node of
one CPU on the other, as Ray lays out clusters: the overhead the worker's core pays when the control plane, the
driver and Ray Data's helper actors live on the head, as they do on any cluster):
``edge analyze`` of an archive (the shared recordings, ``--repeat`` times as that many recorders) with a device
bundle (the demo bundle without ``--bundle``), and BirdNET v2.4's answers on the same archive
(``collect_scores``, one view). Workers = 1 and 2 run on this machine; the code path for N is the same with
``--ray ADDRESS``. Every run is a process of its own, pinned with ``taskset`` (its Ray processes and the driver
included) to as many cores as it has workers, the single process to one: on a two-core machine an unpinned
"1 worker" run would spend the idle core on decoding tasks, the driver and Ray's own processes, and 1 -> 2 workers
would compare two cores with two cores. The season table scales the measured per-window cost of each teacher by the
measured 2-worker efficiency (an extrapolation, labelled as one): BirdNET on CPU measured here; the official-size
NatureLM-audio (8B, bf16) on CPU from ``benchmarks/results/official-scale`` (random weights, one task, four new
tokens); no GPU figure unless one was measured. Writes cluster.json, cluster.md and cluster.png.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from benchmarks.common import machine, pyplot, recordings_dir, write_results

EDGE = [sys.executable, "-c", "from naturelm_edge.cli import run; run()"]
RESULTS = Path(__file__).parent / "results"
SEASON_H = 10_000
WORKERS = (1, 8, 64)
HEAD_APART = "ray, 1 worker, head on the other core"


def archive_of(audio: Path, root: Path, repeat: int, recordings: int | None = None) -> Path:
    """The shared recordings (the first ``recordings`` of them) ``repeat`` times, each copy a recorder of its own
    (links, nothing copied)."""
    from naturelm_edge.audio.files import list_audio

    shutil.rmtree(root, ignore_errors=True)
    for copy in range(repeat):
        for path in list_audio(audio)[:recordings]:
            target = root / f"recorder{copy}" / path.relative_to(audio)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(path)
    return root


def pinned(cores: int, first: int = 0) -> list[str]:
    """The command prefix that keeps a run (and every process it starts) on ``cores`` cores from the ``first``."""
    return ["taskset", "-c", ",".join(str(c) for c in sorted(os.sched_getaffinity(0))[first:first + cores])]


@contextlib.contextmanager
def head_apart() -> Iterator[str]:
    """A Ray cluster of two nodes on this machine, laid out as Ray advises for clusters: a head node with no CPUs
    for tasks (GCS, raylet, and there the driver and Ray Data's helper actors) on the second core, and one worker
    node with one CPU on the first, started with ``ray start``. Yields its address; stops both."""
    ray_cli = str(Path(sys.executable).with_name("ray"))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    address, quiet = f"127.0.0.1:{port}", {"capture_output": True, "check": True}
    # the worker node and the drivers this process starts read the token the head writes (~/.ray/auth_token)
    previous = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "token"
    try:
        subprocess.run([*pinned(1, first=1), ray_cli, "start", "--head", f"--port={port}", "--num-cpus=0",
                        "--include-dashboard=false", "--disable-usage-stats"], **quiet)
        subprocess.run([*pinned(1), ray_cli, "start", f"--address={address}", "--num-cpus=1"], **quiet)
        yield address
    finally:
        stop_nodes(port)
        if previous is None:
            os.environ.pop("RAY_AUTH_MODE")
        else:
            os.environ["RAY_AUTH_MODE"] = previous


def stop_nodes(port: int) -> None:
    """Every process of the cluster whose head listens on ``port``, and their children (its actors), killed;
    ``ray stop`` would stop every Ray on the machine."""
    import psutil

    nodes = [p for p in psutil.process_iter(["cmdline"])
             if any(arg.endswith((f":{port}", f"={port}")) for arg in p.info["cmdline"] or [])]
    family = set(nodes) | {child for p in nodes for child in p.children(recursive=True)}
    for process in family:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(list(family), timeout=10)


def analyze(bundle: Path, archive: Path, out: Path, ray: list[str], pin: list[str]) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    done = subprocess.run([*pin, *EDGE, "analyze", str(archive), "--bundle", str(bundle), "--out", str(out),
                           "--escalate", "off", "--profile", "x86-cpu", "--json", *ray], capture_output=True, text=True,
                          check=False)
    seconds = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"edge analyze {' '.join(ray)} failed: {done.stderr[-2000:]}")
    summary = json.loads(done.stdout[done.stdout.index("{"):])
    return {"seconds": round(seconds, 2), "windows": summary["windows"],
            "windows_per_s": round(summary["windows"] / seconds, 2)}


def collect(audio: Path, out: Path, ray: str | None, workers: int | None, pin: list[str]) -> dict:
    """BirdNET's answers on every window of ``audio`` into a fresh cache, timed in a pinned process of its own."""
    shutil.rmtree(out, ignore_errors=True)
    done = subprocess.run([*pin, sys.executable, "-c", "import sys, json; from benchmarks.cluster import "
                           "collect_here; print(json.dumps(collect_here(*json.loads(sys.argv[1]))))",
                           json.dumps([str(audio), str(out), ray, workers])],
                          capture_output=True, text=True, check=False, cwd=Path(__file__).parent.parent)
    if done.returncode:
        raise SystemExit(f"teacher answers (ray {ray}, {workers} workers) failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def collect_here(audio: str, out: str, ray: str | None, workers: int | None) -> dict:
    """The timed body of :func:`collect`, run in the pinned child process."""
    from naturelm_edge.distill.scores import collect_scores
    from naturelm_edge.teachers import BIRDNET

    teacher = BIRDNET.load(threads=1)
    started = time.perf_counter()
    counts = collect_scores(teacher, Path(audio), Path(out), BIRDNET.training_spec, BIRDNET.fbank, 1, ray=ray,
                            workers=workers)
    seconds = time.perf_counter() - started
    return {"seconds": round(seconds, 2), "windows": counts["asked"],
            "windows_per_s": round(counts["asked"] / seconds, 2)}


def job_figures(runs: dict[str, dict], small: dict[str, dict]) -> dict:
    """Scaling efficiency from 1 to 2 workers, Ray's overhead (1 worker against no Ray) on the same work, and
    that overhead split by the ``small`` archive's runs into what Ray costs once (starting, loading, stopping)
    and what it adds per window (the two archives' difference: what a season of audio pays)."""
    plain = "one process, no Ray"

    def overhead(way: str) -> tuple[float, float, float]:
        """``way`` against one process: in all, once (the small archive's difference), per window (the rest)."""
        seconds, small_s = runs[way]["seconds"], small[way]["seconds"]
        return (round(seconds / runs[plain]["seconds"] - 1, 3), round(small_s - small[plain]["seconds"], 2),
                round((seconds - small_s) / (runs[plain]["seconds"] - small[plain]["seconds"]) - 1, 3))

    (total, once, per_window), (apart, apart_once, apart_per_window) = overhead("ray, 1 worker"), overhead(HEAD_APART)
    return {"runs": runs, "small": small,
            "scaling_efficiency": round(runs["ray, 1 worker"]["seconds"] / runs["ray, 2 workers"]["seconds"] / 2, 3),
            "ray_overhead_head_apart": apart, "ray_once_head_apart_s": apart_once,
            "ray_overhead_per_window_head_apart": apart_per_window,
            "ray_overhead": total, "ray_once_s": once, "ray_overhead_per_window": per_window,
            "seconds_per_window": runs[plain]["seconds"] / max(1, runs[plain]["windows"])}


def season(per_window_s: float, windows_per_hour: float, efficiency: float) -> dict[str, float]:
    """Days for a season of audio on N workers: one worker's time, divided by N and the measured efficiency
    (held at the 2-worker figure for N > 2: an extrapolation)."""
    total = SEASON_H * windows_per_hour * per_window_s
    return {str(n): round(total / (n * (efficiency if n > 1 else 1.0)) / 86_400, 2) for n in WORKERS}


def seasons(collect_job: dict) -> list[dict]:
    from naturelm_edge.distill.tasks import load_tasks
    from naturelm_edge.teachers import BIRDNET, NATURELM

    efficiency = collect_job["scaling_efficiency"]
    rows = [{"teacher": "BirdNET v2.4 (TFLite, 1 CPU thread)", "measured": "here, this run",
             "per_window_s": round(collect_job["seconds_per_window"], 4),
             "windows_per_hour": 3600 / BIRDNET.training_spec.hop_s,
             "days": season(collect_job["seconds_per_window"], 3600 / BIRDNET.training_spec.hop_s, efficiency)}]
    official = RESULTS / "official-scale" / "official-scale.json"
    if official.is_file():
        cpu = json.loads(official.read_text())["full"]["teacher_bf16_cpu"]
        tasks = len(load_tasks())
        per_window = cpu["answer_s"] * tasks
        rows.append({"teacher": f"NatureLM-audio 8B, bf16 on 2 CPU cores ({tasks} built-in tasks)",
                     "measured": "benchmarks/results/official-scale (random weights, 4 new tokens a task)",
                     "per_window_s": per_window, "windows_per_hour": 3600 / NATURELM.hop_s,
                     "days": season(per_window, 3600 / NATURELM.hop_s, efficiency)})
    rows.append({"teacher": "NatureLM-audio 8B on a GPU", "measured": "not measured: no GPU was lent to this run",
                 "per_window_s": None, "windows_per_hour": 3600 / NATURELM.hop_s, "days": None})
    return rows


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = ["# Beyond one machine on Ray", "",
             f"Machine: {m['processor']}, {m['cores']} cores; Ray {report['ray']}. Workers 1 and 2 on this machine, "
             "each run pinned (taskset, driver and Ray's processes included) to as many cores as it has workers, "
             "the single process to one; and 1 worker on a worker node of its own core, with the head node (Ray's "
             "control plane, the driver, Ray Data's helper actors) on the other. Same work in every row of a job.",
             ""]
    for name, job in report["jobs"].items():
        lines += [f"## {name}", "", f"{job['what']}", "", "| run | seconds | windows | windows/s |", "|---|---|---|---|"]
        lines += [f"| {run} | {r['seconds']} | {r['windows']} | {r['windows_per_s']} |" for run, r in job["runs"].items()]
        small = job["small"]
        lines += ["", f"Scaling efficiency 1 -> 2 workers: **{job['scaling_efficiency']:.2f}** (target >= 0.8); "
                      f"Ray's overhead with 1 worker against one process: **{job['ray_overhead'] * 100:+.1f} %** "
                      f"(target <= 10 %): {job['ray_once_s']:.1f} s once (the same runs on one recording per "
                      f"recorder: {small['one process, no Ray']['seconds']:.1f} s without Ray, "
                      f"{small['ray, 1 worker']['seconds']:.1f} s with; starting Ray, loading, stopping) and "
                      f"**{job['ray_overhead_per_window'] * 100:+.1f} %** per window (the two archives' difference: "
                      "what a season of audio pays).",
                  "", f"With the head on a core of its own ({HEAD_APART!r}: a head node with no CPUs for tasks holding "
                      "Ray's control plane, the driver and Ray Data's helper actors, one worker node of one CPU, as Ray "
                      "lays out a cluster; started before the timed run, as a cluster is; the driver also writes the "
                      "store or cache there, work the single process does on its one core), the worker's core against "
                      "one process: "
                      f"**{job['ray_overhead_head_apart'] * 100:+.1f} %** ({job['ray_once_head_apart_s']:.1f} s once, "
                      f"**{job['ray_overhead_per_window_head_apart'] * 100:+.1f} %** per window).", ""]
    lines += [f"## A season ({SEASON_H:,} audio hours) of teacher answers", "",
              "Days on N workers = one worker's time / (N x the 2-worker efficiency): beyond 2 workers an "
              "extrapolation, not a measurement.", "",
              "| teacher | per window s | windows per audio hour | " + " | ".join(f"{n} workers (days)" for n in WORKERS)
              + " | measured |", "|---|---|---|" + "---|" * len(WORKERS) + "---|"]
    for row in report["season"]:
        days = [str(row["days"][str(n)]) if row["days"] else "-" for n in WORKERS]
        lines.append(f"| {row['teacher']} | {row['per_window_s'] if row['per_window_s'] is not None else '-'} | "
                     f"{row['windows_per_hour']:.0f} | " + " | ".join(days) + f" | {row['measured']} |")
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    plt = pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, job in report["jobs"].items():
        runs = job["runs"]
        ax.plot([1, 2], [runs["ray, 1 worker"]["windows_per_s"], runs["ray, 2 workers"]["windows_per_s"]], "o-",
                label=name)
        ax.axhline(runs["one process, no Ray"]["windows_per_s"], ls=":", color=ax.lines[-1].get_color())
    ax.set_xlabel("Ray workers (dotted: one process, no Ray)")
    ax.set_ylabel("windows / s")
    ax.set_xticks([1, 2])
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=None)
    parser.add_argument("--audio", type=Path, default=None)
    # six copies: a few minutes of work in one process (the jobs Ray is for take days), so the share Ray adds
    # is not mostly its start (about 10 s, reported apart from what it adds per window)
    parser.add_argument("--repeat", type=int, default=6, help="copies of the recordings in the archive (recorders)")
    parser.add_argument("--out", type=Path, default=RESULTS / "cluster")
    args = parser.parse_args()
    if len(os.sched_getaffinity(0)) < 2 or shutil.which("taskset") is None:
        raise SystemExit("the cluster benchmark needs two cores and taskset (util-linux) to pin its runs to them")
    import ray

    from benchmarks.soak import demo_bundle

    audio = recordings_dir(args.audio)
    work = Path(os.environ.get("TMPDIR", "/tmp")) / "naturelm-cluster"
    work.mkdir(parents=True, exist_ok=True)
    bundle = args.bundle or demo_bundle(work)
    archive = archive_of(audio, work / "archive", args.repeat)
    small = archive_of(audio, work / "small-archive", args.repeat, recordings=1)
    # name: (Ray address, workers, the cores the driver and a local Ray are pinned to)
    ways = {"one process, no Ray": (None, 1, pinned(1)), "ray, 1 worker": ("local", 1, pinned(1)),
            "ray, 2 workers": ("local", 2, pinned(2)), HEAD_APART: ("head", 1, pinned(1, first=1))}

    def run_ways(chosen: dict, one: Callable[[str | None, int, list[str]], dict]) -> dict:
        found = {}
        for name, (where, n, pin) in chosen.items():
            if where != "head":
                found[name] = one(where, n, pin)
                continue
            with head_apart() as address:
                found[name] = one(address, n, pin)
        return found

    def analyse(where: Path, chosen: dict) -> dict:
        return run_ways(chosen, lambda address, n, pin: analyze(
            bundle, where, work / "analyze", ["--ray", address, "--workers", str(n)] if address else [], pin))

    def answers(where: Path, chosen: dict) -> dict:
        return run_ways(chosen, lambda address, n, pin: collect(where, work / "answers", address,
                                                                n if address else None, pin))

    once = {k: ways[k] for k in ("one process, no Ray", "ray, 1 worker", HEAD_APART)}
    analysed = job_figures(analyse(archive, ways), analyse(small, once))
    answered = job_figures(answers(archive, ways), answers(small, once))
    report = {"machine": machine(), "ray": ray.__version__, "jobs": {
        "edge analyze (device bundle)": {**analysed, "what": f"The shared recordings {args.repeat} times over, as "
                                         f"{args.repeat} recorders' archives, through `edge analyze --escalate off`."},
        "teacher answers (BirdNET v2.4)": {**answered, "what": "BirdNET v2.4's answers on every 3 s window (1.5 s "
                                           "hop) of the same archive, one view, into a fresh cache."}},
        "season": []}
    report["season"] = seasons(answered)
    write_results(args.out, "cluster", report, markdown, plot)


if __name__ == "__main__":
    main()
