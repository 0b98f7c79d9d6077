"""The flash of one bundle to one target, step by step, each step safe to interrupt.

On the target: ``ROOT/bundles/<bundle-id>/`` holds each bundle, ``ROOT/current`` and ``ROOT/previous`` are
symlinks replaced by rename (atomic), so a power cut at any instant leaves a working ``current``. A new
bundle is received into ``bundles/.<id>.partial`` (resumable), verified there, renamed into place, and
only then switched to; a failed health check switches back. ``ROOT/trusted-keys/`` on the target, when it
holds keys, makes the device refuse bundles that are not signed by one of them.
"""

from __future__ import annotations

import json
import os
import shlex
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from naturelm_edge._version import __version__
from naturelm_edge.bundle.open import Bundle
from naturelm_edge.flash.target import FlashError, Target
from naturelm_edge.flash.transfer import sync

RECORD_ENV = "NATURELM_EDGE_FLASH_RECORD"
MIN_ONNXRUNTIME = (1, 17)
SPACE_MARGIN = 1.1

PREFLIGHT = r"""
import json, os, platform, shutil, sys
root, bundle_id = sys.argv[1], sys.argv[2]
os.makedirs(os.path.join(root, "bundles"), exist_ok=True)
info = {"machine": platform.machine(), "python": platform.python_version()}
for name in ("onnxruntime", "naturelm_edge"):
    try:
        info[name] = __import__(name).__version__
    except Exception:
        info[name] = None
info["free_bytes"] = shutil.disk_usage(root).free
info["has_bundle"] = os.path.isfile(os.path.join(root, "bundles", bundle_id, "manifest.json"))
current = os.path.join(root, "current")
info["current"] = os.path.basename(os.readlink(current)) if os.path.islink(current) else None
keys = os.path.join(root, "trusted-keys")
info["trusted_keys"] = os.path.isdir(keys) and any(n.endswith(".pub") for n in os.listdir(keys))
info["rsync"] = shutil.which("rsync") is not None
print(json.dumps(info))
"""


@dataclass
class FlashOptions:
    python: str = "python3"  # the interpreter on the target that has naturelm-edge installed
    health_check: bool = True
    restart_service: str | None = None


@dataclass
class FlashResult:
    target: str
    ok: bool
    result: str
    seconds: float
    bytes_sent: int
    bundle_id: str


def _q(*parts: str) -> str:
    return shlex.join(parts)


def preflight(target: Target, bundle: Bundle, options: FlashOptions) -> dict:
    """Reach the target; check architecture, Python, onnxruntime and free space against the bundle."""
    out = target.check(f"{_q(options.python, '-', target.root, bundle.id)}", "preflight", stdin=PREFLIGHT, timeout_s=60)
    try:
        info = json.loads(out.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError) as err:
        raise FlashError(f"{target.spec}: preflight printed no report ({out[-200:]!r}).") from err
    from naturelm_edge.device_profiles import get

    profile = get(bundle.manifest["target_profile"])
    machines = profile.detect.get("machine") or []
    if machines and info["machine"] not in machines:
        raise FlashError(f"{target.spec}: the bundle is for {profile.name} ({'/'.join(machines)}), "
                         f"the target is {info['machine']}.")
    if tuple(int(x) for x in info["python"].split(".")[:2]) < (3, 10):
        raise FlashError(f"{target.spec}: Python {info['python']} on the target; naturelm-edge needs 3.10 or newer.")
    if info["onnxruntime"] is None:
        raise FlashError(f"{target.spec}: onnxruntime is not installed for {options.python} on the target "
                         f"(see `edge profiles show {profile.name}` for how to install it there).")
    if tuple(int(x) for x in info["onnxruntime"].split(".")[:2]) < MIN_ONNXRUNTIME:
        raise FlashError(f"{target.spec}: onnxruntime {info['onnxruntime']} on the target is older than "
                         f"{'.'.join(map(str, MIN_ONNXRUNTIME))}.")
    needed = sum(f["bytes"] for f in bundle.manifest["files"])
    if not info["has_bundle"] and info["free_bytes"] < needed * SPACE_MARGIN:
        raise FlashError(f"{target.spec}: {info['free_bytes'] / 1e6:.0f} MB free, the bundle needs {needed / 1e6:.0f} MB.")
    return info


def verify_remote(target: Target, directory: str, bundle: Bundle, info: dict, options: FlashOptions) -> None:
    """Every sha256 on the target; the signature too when the device trusts keys."""
    sums = "".join(f"{f['sha256']}  {f['path']}\n" for f in [*bundle.manifest["files"], _manifest_entry(bundle)])
    target.check(f"cd {shlex.quote(directory)} && sha256sum -c --quiet -", "sha256 verification", stdin=sums)
    if info["trusted_keys"]:
        keys = f"{target.root}/trusted-keys"
        target.check(_q(options.python, "-m", "naturelm_edge.cli", "bundle", "verify", directory, "--trusted-keys", keys),
                     "signature verification (the device trusts only signed bundles)")


def _manifest_entry(bundle: Bundle) -> dict:
    from naturelm_edge.hashing import sha256_file

    return {"path": "manifest.json", "sha256": sha256_file(bundle.root / "manifest.json")}


def point(link: str, to: str) -> str:
    """Shell that points symlink ``link`` at ``to`` atomically: a new link, renamed over the old one.

    ``to`` is a shell word (quoted, or a quoted variable expansion).
    """
    return f"ln -sfn {to} .{link}.new && mv -T .{link}.new {link}"


SWITCH = f"""set -e
cd {{root}}
old=$(readlink current 2>/dev/null || true)
if [ -n "$old" ] && [ "$old" != {{new}} ]; then {point("previous", '"$old"')}; fi
{point("current", "{new}")}
sync
echo "$old"
"""

ROLLBACK = f"""set -e
cd {{root}}
cur=$(readlink current)
prev=$(readlink previous)
{point("current", '"$prev"')}
{point("previous", '"$cur"')}
sync
echo "$prev"
"""


PRUNE = """cd {root}
cur=$(basename "$(readlink current 2>/dev/null)" 2>/dev/null)
prev=$(basename "$(readlink previous 2>/dev/null)" 2>/dev/null)
cd bundles
for d in * .*.partial; do
  case "$d" in "$cur"|"$prev"|"."|"..") ;; *) if [ -d "$d" ]; then rm -rf -- "$d"; fi ;; esac
done
"""


def prune(target: Target) -> None:
    """Keep only the bundles ``current`` and ``previous`` point at (a rollback needs no more); field cards are small."""
    target.check(PRUNE.format(root=shlex.quote(target.root)), "removal of old bundles")


def switch(target: Target, bundle_id: str) -> str | None:
    """Point ``current`` at the bundle (``previous`` at what was current); return the old target."""
    out = target.check(SWITCH.format(root=shlex.quote(target.root), new=shlex.quote(f"bundles/{bundle_id}")), "switch")
    return out.strip() or None


def switch_back(target: Target, old: str | None) -> None:
    root = shlex.quote(target.root)
    if old:
        target.check(f"cd {root} && {point('current', shlex.quote(old))} && sync", "rollback")
    else:  # a fresh install that failed: no current is better than a broken one
        target.check(f"cd {root} && rm -f current && sync", "rollback")


def health_check(target: Target, info: dict, options: FlashOptions) -> None:
    command = [options.python, "-c", "from naturelm_edge.cli import run_edge; run_edge()", "--bundle",
               f"{target.root}/current", "--self-test"]
    if info["trusted_keys"]:
        command += ["--trusted-keys", f"{target.root}/trusted-keys"]
    target.check(_q(*command), "health check (edge-run --self-test)", timeout_s=300)


def flash(bundle: Bundle, target: Target, options: FlashOptions) -> FlashResult:
    started = time.perf_counter()
    sent = 0
    try:
        info = preflight(target, bundle, options)
        final = f"{target.root}/bundles/{bundle.id}"
        if info["has_bundle"]:
            try:
                verify_remote(target, final, bundle, info, options)
                outcome = "already there, verified"
            except FlashError:  # damaged on the target: rsync --checksum replaces what differs
                sent = sync(target, bundle.root, final, None, info["rsync"])
                verify_remote(target, final, bundle, info, options)
                outcome = "repaired"
        else:
            partial = f"{target.root}/bundles/.{bundle.id}.partial"
            basis = f"../{info['current']}" if info["current"] else None
            sent = sync(target, bundle.root, partial, basis, info["rsync"])
            verify_remote(target, partial, bundle, info, options)
            target.check(f"mv -T {shlex.quote(partial)} {shlex.quote(final)} && sync", "rename into place")
            outcome = "installed" if not info["current"] else f"updated from {info['current']}"
        old = switch(target, bundle.id) if info["current"] != bundle.id else f"bundles/{bundle.id}"
        if options.health_check:
            try:
                health_check(target, info, options)
            except FlashError as err:
                if old != f"bundles/{bundle.id}":
                    switch_back(target, old)
                raise FlashError(f"{err} Switched back to {old or 'nothing (fresh install)'}.") from None
        if options.restart_service:
            target.check(_q("systemctl", "restart", options.restart_service), "service restart")
        prune(target)
        return FlashResult(target.spec, True, outcome, time.perf_counter() - started, sent, bundle.id)
    except FlashError as err:
        return FlashResult(target.spec, False, str(err), time.perf_counter() - started, sent, bundle.id)


def rollback(target: Target, options: FlashOptions) -> FlashResult:
    """Swap ``current`` and ``previous`` on the target, then check health."""
    started = time.perf_counter()
    try:
        now = target.check(ROLLBACK.format(root=shlex.quote(target.root)), "rollback (is there a previous bundle?)").strip()
        if options.health_check:
            info = {"trusted_keys": target.run(f"ls {shlex.quote(target.root)}/trusted-keys/*.pub").returncode == 0}
            health_check(target, info, options)
        return FlashResult(target.spec, True, f"rolled back to {Path(now).name}", time.perf_counter() - started, 0, Path(now).name)
    except FlashError as err:
        return FlashResult(target.spec, False, str(err), time.perf_counter() - started, 0, "")


def record_path() -> Path:
    if os.environ.get(RECORD_ENV):
        return Path(os.environ[RECORD_ENV])
    state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return state / "naturelm-edge" / "flashes.jsonl"


def record(results: list[FlashResult], action: str) -> Path:
    """Append what went where (one JSON line per target) to the local record."""
    path = record_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    when = datetime.now(timezone.utc).isoformat(timespec="seconds")
    with path.open("a") as handle:
        for r in results:
            handle.write(json.dumps({"time_utc": when, "action": action, "toolkit_version": __version__, **asdict(r)}) + "\n")
    return path
