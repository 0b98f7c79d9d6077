"""`edge flash` against a real sshd on loopback and local-path targets."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from naturelm_edge.bundle.manifest import read_manifest
from testbed.bundles import variant
from testbed.sshd import Sshd
from tests.helpers import run_cli

pytestmark = pytest.mark.skipif(shutil.which("rsync") is None or not Path("/usr/sbin/sshd").exists(),
                                reason="needs rsync and OpenSSH's sshd (apt install rsync openssh-server)")
if os.environ.get("CI") == "true":
    pytestmark = []  # CI installs both: there a missing one must fail, not skip


@pytest.fixture()
def sshd(tmp_path):
    server = Sshd(tmp_path / "sshd").start()
    server.trust_host_key()
    yield server
    server.stop()


@pytest.fixture()
def record(tmp_path, monkeypatch):
    path = tmp_path / "flashes.jsonl"
    monkeypatch.setenv("NATURELM_EDGE_FLASH_RECORD", str(path))
    return path


def ssh_args(server: Sshd) -> list[str]:
    return ["--identity", str(server.user_key), "--known-hosts", str(server.known_hosts), "--python", sys.executable]


def current(root: Path) -> str:
    return os.readlink(root / "current")


def test_fresh_install_then_update_moves_only_the_changed_file(bundle, sshd, record, tmp_path):
    device = tmp_path / "device"
    local = tmp_path / "sdcard"
    first = run_cli("flash", str(bundle), sshd.url(device), str(local), *ssh_args(sshd))
    assert first.returncode == 0, first.stdout + first.stderr
    bundle_id = read_manifest(bundle)["bundle_id"]
    for root in (device, local):
        assert current(root) == f"bundles/{bundle_id}"
        assert (root / "current" / "manifest.json").is_file() and not (root / "previous").exists()
    total = sum(f.stat().st_size for f in bundle.iterdir() if f.is_file())
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    assert {r["target"] for r in lines} == {sshd.url(device), str(local)} and all(r["ok"] for r in lines)
    assert all(r["bytes_sent"] >= 0.9 * total for r in lines)  # everything moved the first time

    changed = variant(bundle, tmp_path / "v2", {"labels.txt": b"Great Plains toad\nHouse Sparrow\n"})
    second = run_cli("flash", str(changed), sshd.url(device), *ssh_args(sshd))
    assert second.returncode == 0, second.stdout + second.stderr
    new_id = read_manifest(changed)["bundle_id"]
    assert current(device) == f"bundles/{new_id}" and os.readlink(device / "previous") == f"bundles/{bundle_id}"
    update = json.loads(record.read_text().splitlines()[-1])
    assert update["result"].startswith("updated from") and update["bytes_sent"] < 0.05 * total  # one small file moved

    again = run_cli("flash", str(changed), sshd.url(device), *ssh_args(sshd))
    assert again.returncode == 0 and "already there, verified" in again.stdout

    back = run_cli("flash", "--rollback", sshd.url(device), *ssh_args(sshd))
    assert back.returncode == 0, back.stdout + back.stderr
    assert current(device) == f"bundles/{bundle_id}" and os.readlink(device / "previous") == f"bundles/{new_id}"

    third = variant(bundle, tmp_path / "v3", {"labels.txt": b"House Sparrow\n"})
    assert run_cli("flash", str(third), sshd.url(device), *ssh_args(sshd), "--no-health-check").returncode == 0
    kept = sorted(p.name for p in (device / "bundles").iterdir())
    assert kept == sorted([bundle_id, read_manifest(third)["bundle_id"]])  # current and previous; v2 removed


def test_host_keys_unknown_refused_unless_accepted_changed_always_refused(bundle, sshd, record, tmp_path):
    sshd.known_hosts.write_text("")
    device = tmp_path / "device"
    unknown = run_cli("flash", str(bundle), sshd.url(device), *ssh_args(sshd))
    assert unknown.returncode != 0 and "preflight failed" in unknown.stderr + unknown.stdout
    assert not (device / "current").exists()
    accepted = run_cli("flash", str(bundle), sshd.url(device), *ssh_args(sshd), "--accept-new-host-key", "--no-health-check")
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert Path(f"{sshd.host_key}.pub").read_text().split()[1] in sshd.known_hosts.read_text()  # now remembered
    other = tmp_path / "other_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    kind, key = Path(f"{other}.pub").read_text().split()[:2]
    sshd.known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {kind} {key}\n")  # the device's key "changed"
    changed = run_cli("flash", str(bundle), sshd.url(device), *ssh_args(sshd), "--accept-new-host-key")
    assert changed.returncode != 0 and "preflight failed" in changed.stdout + changed.stderr


def test_resume_after_the_connection_is_cut(bundle, sshd, record, tmp_path):
    big = variant(bundle, tmp_path / "big", {"extra.bin": np.random.default_rng(0).bytes(24 * 2**20)})
    device = tmp_path / "device"
    args = [sys.executable, "-c", "from naturelm_edge.cli import run; run()", "flash", str(big), sshd.url(device),
            *ssh_args(sshd), "--bwlimit", "4000"]
    cut = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    partial = device / "bundles" / f".{read_manifest(big)['bundle_id']}.partial" / "extra.bin"
    deadline = time.time() + 60
    while time.time() < deadline and not (partial.exists() or list(partial.parent.glob(".extra.bin.*"))):
        time.sleep(0.2)
    time.sleep(2.0)
    os.killpg(cut.pid, signal.SIGKILL)  # the link drops mid-transfer
    cut.wait()
    time.sleep(1.0)
    assert not (device / "current").exists()  # nothing half-received was switched to
    resumed = run_cli("flash", str(big), sshd.url(device), *ssh_args(sshd))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    sent = json.loads(record.read_text().splitlines()[-1])["bytes_sent"]
    assert sent < 0.9 * 24 * 2**20  # what arrived before the cut was not sent again
    assert current(device).endswith(read_manifest(big)["bundle_id"])


def test_corrupted_file_on_the_target_is_repaired(bundle, sshd, record, tmp_path):
    device = tmp_path / "device"
    assert run_cli("flash", str(bundle), sshd.url(device), *ssh_args(sshd), "--no-health-check").returncode == 0
    encoder = device / "current" / "encoder.onnx"
    data = bytearray(encoder.read_bytes())
    data[len(data) // 2] ^= 0xFF
    encoder.write_bytes(bytes(data))
    repaired = run_cli("flash", str(bundle), sshd.url(device), *ssh_args(sshd))
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert "repaired" in repaired.stdout
    assert encoder.read_bytes() == (bundle / "encoder.onnx").read_bytes()


def test_failed_health_check_switches_back(bundle, record, tmp_path):
    device = tmp_path / "device"
    assert run_cli("flash", str(bundle), str(device), "--python", sys.executable).returncode == 0
    good = current(device)
    broken = variant(bundle, tmp_path / "broken", {"decoder.onnx": b"not an onnx graph, but the hashes match"})
    result = run_cli("flash", str(broken), str(device), "--python", sys.executable)
    assert result.returncode != 0
    assert "health check" in result.stderr and "Switched back" in result.stderr
    assert current(device) == good  # the device still runs the bundle that worked
    assert not json.loads(record.read_text().splitlines()[-1])["ok"]


def test_unsigned_bundle_refused_by_a_device_that_demands_signatures(bundle, sshd, record, tmp_path):
    device = tmp_path / "device"
    keys = tmp_path / "keys"
    assert run_cli("bundle", "keygen", str(keys / "fleet")).returncode == 0
    (device / "trusted-keys").mkdir(parents=True)
    shutil.copy(keys / "fleet.pub", device / "trusted-keys" / "fleet.pub")
    refused = run_cli("flash", str(bundle), sshd.url(device), *ssh_args(sshd))
    assert refused.returncode != 0 and "signature verification" in refused.stderr
    assert not (device / "current").exists()
    signed = tmp_path / "signed"
    shutil.copytree(bundle, signed)
    assert run_cli("bundle", "sign", str(signed), "--key", str(keys / "fleet.key")).returncode == 0
    accepted = run_cli("flash", str(signed), sshd.url(device), *ssh_args(sshd))
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr


def test_bad_targets_are_named(bundle, record, tmp_path):
    result = run_cli("flash", str(bundle), "ftp://device/path")
    assert result.returncode != 0 and "ftp://device/path" in result.stderr
    damaged = tmp_path / "damaged"
    shutil.copytree(bundle, damaged)
    (damaged / "encoder.onnx").write_bytes((damaged / "encoder.onnx").read_bytes()[:1000])  # cut off in transfer
    cut = run_cli("flash", str(damaged), str(tmp_path / "device"))
    assert cut.returncode != 0 and "encoder.onnx" in cut.stderr and not (tmp_path / "device").exists()


def test_sftp_when_rsync_is_not_there(bundle, sshd, record, tmp_path):
    """The SFTP path (asyncssh): fresh install, resume of a cut upload, update moving one file, repair."""
    big = variant(bundle, tmp_path / "big", {"extra.bin": np.random.default_rng(1).bytes(8 * 2**20)})
    device = tmp_path / "device"
    bundle_id = read_manifest(big)["bundle_id"]
    partial = device / "bundles" / f".{bundle_id}.partial"
    partial.mkdir(parents=True)
    half = (big / "extra.bin").read_bytes()[: 4 * 2**20]
    (partial / "extra.bin.part").write_bytes(half)  # what a cut connection left behind
    sftp = [*ssh_args(sshd), "--transfer", "sftp"]
    first = run_cli("flash", str(big), sshd.url(device), *sftp)
    assert first.returncode == 0, first.stdout + first.stderr
    total = sum(f.stat().st_size for f in big.rglob("*") if f.is_file())
    sent = json.loads(record.read_text().splitlines()[-1])["bytes_sent"]
    assert total - 4 * 2**20 - 1024 <= sent <= total - 4 * 2**20 + 1024  # the first half was not sent again
    assert (device / "current" / "extra.bin").read_bytes() == (big / "extra.bin").read_bytes()

    changed = variant(big, tmp_path / "v2", {"labels.txt": b"Great Plains toad\n"})
    update = run_cli("flash", str(changed), sshd.url(device), *sftp)
    assert update.returncode == 0, update.stdout + update.stderr
    entry = json.loads(record.read_text().splitlines()[-1])
    assert entry["result"].startswith("updated from") and entry["bytes_sent"] < 100_000  # unchanged files copied there

    (device / "current" / "extra.bin").write_bytes(b"damaged")
    repaired = run_cli("flash", str(changed), sshd.url(device), *sftp)
    assert repaired.returncode == 0 and "repaired" in repaired.stdout
    assert (device / "current" / "extra.bin").read_bytes() == (big / "extra.bin").read_bytes()


def test_sftp_refuses_an_unknown_host_key(bundle, sshd, record, tmp_path):
    from naturelm_edge.bundle.open import load_bundle
    from naturelm_edge.flash.target import FlashError, SshOptions, Target
    from naturelm_edge.flash.transfer import sftp_sync

    sshd.known_hosts.write_text("")
    target = Target.parse(sshd.url(tmp_path / "device"), SshOptions(sshd.user_key, sshd.known_hosts, transfer="sftp"))
    with pytest.raises(FlashError, match="SFTP transfer failed"):
        sftp_sync(target, load_bundle(bundle).root, str(tmp_path / "device" / "x"), None)
    assert not (tmp_path / "device" / "x").exists()
