"""Faults a field season brings, injected for real: a full output disk, a failing escalation server, kills."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from naturelm_edge.wire.loopback import EscalationServer
from testbed.faulty_server import MODES, FaultyServer
from tests.helpers import events

TOAD = "opensoundscape/great_plains_toad.wav"
EDGE_RUN = [sys.executable, "-c", "from naturelm_edge.cli import run_edge; run_edge()"]


def answered(out: Path) -> list[tuple[str, float, str]]:
    return [(e["source"], e["offset_s"], e["answer"]) for e in events(out)] if (out / "events.db").exists() else []


def in_a_small_filesystem(script: str, size_kb: int, options: str = "") -> subprocess.CompletedProcess:
    """Run ``script`` (sh) with $D a fresh tmpfs of ``size_kb``, in a mount namespace of its own (no root needed
    where user namespaces are enabled); the tmpfs vanishes with it, so the script copies out what it needs."""
    unshare = shutil.which("unshare")
    probe = subprocess.run([unshare or "unshare", "-rm", "true"], capture_output=True) if unshare else None
    if probe is None or probe.returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("unshare -rm (util-linux, user namespaces) is needed for the full-disk test")
        pytest.skip("no user namespaces here")
    wrapped = f'D=$(mktemp -d) && mount -t tmpfs -o size={size_kb}k{options} tmpfs "$D" && {script}'
    return subprocess.run([unshare, "-rm", "sh", "-c", wrapped], capture_output=True, text=True, timeout=600)


def test_a_full_disk_stops_or_skips_cleanly_and_the_run_resumes_when_space_returns(bundle, subset_audio, tmp_path):
    recording = subset_audio / TOAD
    args = ["--bundle", str(bundle), str(recording), "--profile", "x86-cpu", "--escalate", "queue", "--threshold",
            "1.01", "--no-gate", "-q"]
    clean = subprocess.run([*EDGE_RUN, *args, "--out", str(tmp_path / "clean")], capture_output=True, text=True)
    assert clean.returncode == 0, clean.stderr
    want = answered(tmp_path / "clean")
    assert len(want) >= 3
    run = " ".join(f"'{a}'" for a in [*EDGE_RUN, *args])
    saved = tmp_path / "saved"
    saved.mkdir()
    script = (f'head -c 700000 /dev/zero > "$D/filler"; {run} --out "$D/out"; echo "full-rc=$?" >&2; '
              f'cp -r "$D/out" "{saved}/full"; rm "$D/filler"; {run} --out "$D/out"; echo "resumed-rc=$?" >&2; '
              f'cp -r "$D/out" "{saved}/resumed"')
    result = in_a_small_filesystem(script, 1024)
    assert "Traceback" not in result.stderr, result.stderr
    full_rc = int(result.stderr.split("full-rc=")[1].split()[0])
    assert full_rc in (0, 4), result.stderr  # went on without clips and queue, or stopped cleanly
    if full_rc == 4:
        assert "the disk is full" in result.stderr and "run again to resume" in result.stderr
    skipped_something = full_rc == 4 or "escalation skipped" in result.stderr
    assert skipped_something, result.stderr  # the disk really filled up
    before = answered(saved / "full")
    assert before == want[: len(before)]  # what was committed is a prefix of the clean run: nothing lost or changed
    assert "resumed-rc=0" in result.stderr, result.stderr
    after = answered(saved / "resumed")
    assert after == want  # every window once, none twice
    db = sqlite3.connect(saved / "resumed" / "events.db")
    assert db.execute("SELECT COUNT(*) FROM windows").fetchone()[0] == len(want)


@pytest.mark.parametrize("mode", MODES)
def test_a_failing_escalation_server_never_holds_the_run(bundle, subset_audio, tmp_path, mode):
    """500s, silence, a dropped connection, a trickled answer: the run finishes in bounded time, the queue holds
    with backed-off retries, and once a working server answers every escalation is delivered exactly once."""
    server = FaultyServer(mode).start()
    out = tmp_path / "out"
    args = ["--bundle", str(bundle), str(subset_audio / TOAD), "--profile", "x86-cpu", "--threshold", "1.01",
            "--no-gate", "-q", "--out", str(out)]
    try:
        started, started_wall = time.monotonic(), time.time()
        result = subprocess.run([*EDGE_RUN, *args, "--escalate", server.url], capture_output=True, text=True,
                                timeout=300)
        elapsed = time.monotonic() - started
    finally:
        server.stop()
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert elapsed < 60, f"{mode}: the run took {elapsed:.0f} s"  # two 10 s request deadlines at most, plus work
    assert server.requests >= 1
    db = sqlite3.connect(out / "events.db")
    queued = db.execute("SELECT status, attempts, next_try, last_error FROM escalations").fetchall()
    assert queued and all(status == "queued" for status, *_ in queued)
    tried = [row for row in queued if row[1] >= 1]
    assert tried and all(row[2] > started_wall + 1 and row[3] for row in tried)  # backed off, with the reason
    healthy = EscalationServer().start()
    try:
        deadline = time.time() + 120
        while time.time() < deadline:  # back-off delays the first retries by up to a few seconds
            again = subprocess.run([*EDGE_RUN, *args, "--escalate", healthy.url], capture_output=True, text=True,
                                   timeout=300)
            assert again.returncode == 0, again.stderr
            if all(e["escalation_status"] != "queued" for e in events(out)):
                break
            time.sleep(2)
    finally:
        healthy.stop()
    assert all(e["escalation_status"] in ("confirmed", "revised") for e in events(out))
    assert sorted(healthy.requests.values()) == [1] * len(queued)  # each delivered once


def test_thirty_kills_at_random_instants_then_a_resume_equal_one_clean_run(bundle, audio_dir, tmp_path):
    """SIGTERM and SIGKILL, alternating, at seeded random instants of 30 runs over the same input; then a final
    resume: the events are those of one clean run, none twice, none missing (answers and escalation marks)."""
    import random

    source = audio_dir / "librosa-data" / "glacier-bay-humpback.hq.ogg"
    args = ["--bundle", str(bundle), str(source), "--profile", "x86-cpu", "--escalate", "queue", "--no-gate", "-q"]
    clean = subprocess.run([*EDGE_RUN, *args, "--out", str(tmp_path / "clean")], capture_output=True, text=True)
    assert clean.returncode == 0, clean.stderr
    out = tmp_path / "killed"
    rng = random.Random(7)
    for i in range(30):
        process = subprocess.Popen([*EDGE_RUN, *args, "--out", str(out)], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True)
        time.sleep(rng.uniform(0.5, 4.0))  # import, bundle load, and somewhere in the windows
        process.send_signal(signal.SIGTERM if i % 2 else signal.SIGKILL)
        _, stderr = process.communicate(timeout=120)
        assert "Traceback" not in stderr, stderr
    final = subprocess.run([*EDGE_RUN, *args, "--out", str(out)], capture_output=True, text=True)
    assert final.returncode == 0, final.stderr

    def stored(folder: Path) -> list[tuple]:
        return sorted((e["source"], e["offset_s"], e["answer"], e["escalation_status"]) for e in events(folder))

    assert stored(out) == stored(tmp_path / "clean")
    db = sqlite3.connect(out / "events.db")
    assert db.execute("SELECT COUNT(*) FROM windows").fetchone()[0] == len(
        sqlite3.connect(tmp_path / "clean" / "events.db").execute("SELECT source FROM windows").fetchall())


def test_out_on_a_read_only_card_is_named_before_any_work(bundle, subset_audio):
    run = " ".join(f"'{a}'" for a in [*EDGE_RUN, "--bundle", str(bundle), str(subset_audio / TOAD), "--profile",
                                      "x86-cpu"])
    result = in_a_small_filesystem(f'{run} --out "$D/results"; echo "rc=$?" >&2', 1024, ",ro")
    assert "rc=2" in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert "--out is on a read-only file system" in result.stderr
