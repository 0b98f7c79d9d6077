"""`edge analyze --ray` on a real local multi-node Ray cluster (a head and two worker nodes, one CPU each):
the same events as the single process, a worker node removed mid-run, the driver killed and started again."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import run_cli

ray = pytest.importorskip("ray")  # the cluster extra (.ci/run installs it; in CI a skip fails the run)

# recorders: two Song Meter series of two files, and loose files (each a recorder of its own)
ARCHIVE = {"site1/SMA00001_20240501_050000.wav": "opensoundscape/1min.wav",
           "site1/SMA00001_20240501_051000.wav": "opensoundscape/birds_10s.wav",
           "site2/SMA00002_20240501_050000.wav": "birdvoxdetect/BirdVox-full-night_unit03_00-19-45_01min.wav",
           "site2/SMA00002_20240501_051000.wav": "opensoundscape/great_plains_toad.wav",
           "loose/a.wav": "birdvoxdetect/BirdVox-scaper_example_background.wav",
           "loose/b.wav": "opensoundscape/rugr_drum.wav",
           "loose/c.ogg": "librosa-data/glacier-bay-humpback.ogg"}


@pytest.fixture(scope="module")
def archive(audio_dir: Path, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("archive")
    for name, source in ARCHIVE.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).symlink_to(audio_dir / source)
    return root


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    made = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    workers = [made.add_node(num_cpus=1) for _ in range(2)]
    made.wait_for_nodes()
    yield made, workers
    made.shutdown()


def analyze(bundle: Path, archive: Path, out: Path, *ray_args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "from naturelm_edge.cli import run; run()", "analyze", str(archive),
                             "--bundle", str(bundle), "--out", str(out), "--escalate", "off", "--profile", "x86-cpu",
                             *ray_args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished(process: subprocess.Popen, timeout: float = 600) -> str:
    stdout, stderr = process.communicate(timeout=timeout)
    assert process.returncode == 0, stderr[-3000:]
    return stdout


def stored(out: Path) -> list[tuple]:
    db = sqlite3.connect(out / "events.db")
    rows = sorted(db.execute("SELECT source, offset_s, answer, round(confidence, 4), stage, label FROM events"))
    windows = db.execute("SELECT COUNT(*), COUNT(DISTINCT source || offset_s) FROM windows").fetchone()
    db.close()
    assert windows[0] == windows[1]  # every window once
    return rows


def committed(out: Path) -> int:
    try:
        db = sqlite3.connect(out / "events.db", timeout=1)
        count = db.execute("SELECT COUNT(*) FROM windows").fetchone()[0]
        db.close()
        return count
    except sqlite3.Error:
        return 0


def under_way(process: subprocess.Popen, out: Path) -> subprocess.Popen:
    """``process`` once its first recorder's windows are in the store (mid-run: others are still computing)."""
    deadline = time.time() + 300
    while committed(out) == 0 and time.time() < deadline and process.poll() is None:
        time.sleep(0.1)
    return process


@pytest.fixture(scope="module")
def single(bundle: Path, archive: Path, tmp_path_factory) -> list[tuple]:
    out = tmp_path_factory.mktemp("single")
    done = run_cli("analyze", str(archive), "--bundle", str(bundle), "--out", str(out), "--escalate", "off",
                   "--profile", "x86-cpu")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = stored(out)
    assert len({r[0] for r in rows}) == len(ARCHIVE)
    return rows


def test_the_cluster_stores_what_the_single_process_stores(bundle, archive, cluster, single, tmp_path):
    made, _ = cluster
    out = tmp_path / "cluster"
    process = analyze(bundle, archive, out, "--ray", made.address)
    printed = finished(process)
    assert stored(out) == single
    assert "site1/SMA00001: files 2" in printed and "site2/SMA00002: files 2" in printed  # a summary per recorder


def test_a_local_ray_is_a_new_one_beside_a_running_cluster(bundle, archive, cluster, single, tmp_path):
    """`--ray local` starts a Ray of its own with the workers asked, even while a cluster runs on this machine
    (Ray joins that one when no address is given, and then refuses a CPU count)."""
    out = tmp_path / "local"
    finished(analyze(bundle, archive, out, "--ray", "local", "--workers", "1"))
    assert stored(out) == single


def test_a_worker_node_removed_mid_run_loses_nothing(bundle, archive, cluster, single, tmp_path):
    made, workers = cluster
    out = tmp_path / "node-lost"
    process = under_way(analyze(bundle, archive, out, "--ray", made.address), out)
    made.remove_node(workers[1])  # its running task is retried on the other node
    finished(process)
    assert stored(out) == single
    workers[1] = made.add_node(num_cpus=1)  # the next test's cluster has two worker nodes again


def test_the_driver_killed_and_started_again_goes_on_from_the_store(bundle, archive, cluster, single, tmp_path):
    made, _ = cluster
    out = tmp_path / "driver-killed"
    process = under_way(analyze(bundle, archive, out, "--ray", made.address), out)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    partial = committed(out)
    again = analyze(bundle, archive, out, "--ray", made.address)
    printed = finished(again)
    assert partial > 0 and f"(resumed past {partial})" in printed  # what was stored is not analysed again
    assert stored(out) == single  # nothing lost, nothing twice


# three 10 s recordings at two rates (32 and 44.1 kHz): each route asks the teacher about every window
# three times over, so they stay short
TEACHER_AUDIO = ["opensoundscape/birds_10s.wav", "birdvoxdetect/BirdVox-scaper_example_background.wav",
                 "opensoundscape/rugr_drum.wav"]


@pytest.fixture(scope="module")
def teacher_audio(audio_dir: Path, tmp_path_factory) -> Path:
    """Three recordings and a file a recorder cut off after its header (reported by name, the others go on)."""
    root = tmp_path_factory.mktemp("teacher-audio")
    for name in TEACHER_AUDIO:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).symlink_to(audio_dir / name)
    (root / "cut.wav").write_bytes((audio_dir / TEACHER_AUDIO[0]).read_bytes()[:44])
    return root


def cached_scores(cache: Path) -> dict[str, tuple]:
    import numpy as np

    found = {}
    for path in sorted(cache.glob("*.npz")):
        with np.load(path) as data:
            found[path.name] = tuple(data[k].copy() for k in ("features", "logits", "embedding", "starts"))
    return found


def test_birdnet_answers_over_the_cluster_fill_the_cache_the_single_process_fills(cluster, teacher_audio, tmp_path):
    import numpy as np

    from naturelm_edge.distill.scores import collect_scores
    from naturelm_edge.teachers import BIRDNET

    made, _ = cluster
    teacher = BIRDNET.load(threads=1)
    args = (teacher_audio, BIRDNET.training_spec, BIRDNET.fbank, 3)
    here = collect_scores(teacher, args[0], tmp_path / "here", *args[1:])
    try:
        there = collect_scores(teacher, args[0], tmp_path / "cluster", *args[1:], ray=made.address, batch=8)
        again = collect_scores(teacher, args[0], tmp_path / "cluster", *args[1:], ray=made.address)
    finally:
        ray.shutdown()
    assert there["asked"] == here["asked"] > 0 and len(there["unreadable"]) == 1 and "cut.wav" in there["unreadable"][0]
    assert again["asked"] == 0 and again["views_reused"] == there["views_reused"] + len(cached_scores(tmp_path / "here"))
    ours, theirs = cached_scores(tmp_path / "here"), cached_scores(tmp_path / "cluster")
    assert ours.keys() == theirs.keys() and any(name.endswith("-2.npz") for name in ours)  # augmented views too
    for name, (features, *answers) in ours.items():
        # the fbank of an augmented view can differ by one float16 step from one process to another (one value
        # of 18 windows' in a run by hand); the teacher's answers and the window starts are bit-equal
        np.testing.assert_allclose(features, theirs[name][0], rtol=2e-3, atol=1e-5)
        for mine, other in zip(answers, theirs[name][1:]):
            np.testing.assert_array_equal(mine, other)  # each window once, answered as here


def test_naturelm_answers_over_the_cluster_equal_the_single_process(cluster, tiny_checkpoint, teacher_audio, tmp_path):
    made, _ = cluster
    common = ["distill", "collect", str(tiny_checkpoint), "--audio", str(teacher_audio), "--max-new-tokens", "4",
              "--beams", "1", "--batch", "4"]
    here = run_cli(*common, "--out", str(tmp_path / "here"), timeout=600)
    there = run_cli(*common, "--out", str(tmp_path / "cluster"), "--ray", made.address, timeout=600)
    again = run_cli(*common, "--out", str(tmp_path / "cluster"), "--ray", made.address, timeout=600)
    for done in (here, there, again):
        assert done.returncode == 0, done.stderr[-3000:]
    assert "cut.wav" in there.stderr and " 0 answers asked" in again.stdout
    import json

    def records(name: str) -> dict[str, tuple]:
        lines = (tmp_path / name / "records.jsonl").read_text().splitlines()
        return {r["key"]: (r["text"], r["token_ids"]) for r in map(json.loads, lines)}

    ours, theirs = records("here"), records("cluster")
    assert len(ours) > 0 and ours == theirs  # every window and task once, the same answers
    assert sorted(p.name for p in (tmp_path / "here" / "audio").iterdir()) == \
        sorted(p.name for p in (tmp_path / "cluster" / "audio").iterdir())
