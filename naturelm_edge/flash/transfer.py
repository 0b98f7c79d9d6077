"""Moving a bundle onto a target: rsync when both ends have it, else SFTP (asyncssh) for ssh targets.

With SFTP only changed files move, and a cut upload resumes.

Files are compared by sha256 on the target (``sha256sum`` over the same ssh connection the other steps
use); a file the current bundle already holds is copied there instead of sent; others are uploaded to
``NAME.part``, appended to from where a cut transfer stopped, and renamed into place. Whatever a resumed
part got wrong, the sha256 check that follows every transfer catches, and the next flash sends it whole.
"""

from __future__ import annotations

import asyncio
import posixpath
import re
import shlex
import shutil
import subprocess
from pathlib import Path

from naturelm_edge.flash.target import FlashError, Target
from naturelm_edge.hashing import sha256_file

CHUNK = 1 << 20


def sync(target: Target, source: Path, dest: str, basis: str | None, rsync_there: bool = True,
         timeout_s: float = 3600) -> int:
    """Copy ``source/`` into ``dest`` on the target; return the bytes sent over the wire.

    rsync when both ends have it (or when asked), else SFTP for ssh targets (below).
    """
    have_rsync = shutil.which("rsync") is not None and rsync_there
    method = target.ssh.transfer if target.ssh.transfer != "auto" else ("rsync" if have_rsync else "sftp")
    if method == "sftp":
        if not target.remote:
            raise FlashError(f"{target.spec}: SFTP is for ssh targets; install rsync to flash local paths.")
        return sftp_sync(target, source, dest, basis)
    command = ["rsync", "-a", "--checksum", "--partial", "--delete", "--stats"]
    if basis:
        command.append(f"--copy-dest={basis}")
    if target.ssh.bwlimit_kbps:
        command.append(f"--bwlimit={target.ssh.bwlimit_kbps}")
    if target.remote:
        command += ["-e", shlex.join(["ssh", *target.ssh.args(target.port)]), f"{source}/", f"{target.address}:{dest}/"]
    else:
        command += [f"{source}/", f"{dest}/"]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as err:
        raise FlashError(f"{target.spec}: transfer did not finish within {timeout_s:.0f} s.") from err
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines()
        raise FlashError(f"{target.spec}: transfer failed ({lines[-1] if lines else f'rsync exit {result.returncode}'}).")
    sent = re.search(r"Total bytes sent: ([\d,.]+)", result.stdout)
    return int(re.sub(r"[,.]", "", sent.group(1))) if sent else 0


def remote_hashes(target: Target, folder: str, names: list[str]) -> dict[str, str]:
    """sha256 of those of ``names`` that exist under ``folder`` on the target."""
    script = f"cd {shlex.quote(folder)} 2>/dev/null && sha256sum -- {' '.join(map(shlex.quote, names))} 2>/dev/null; true"
    hashes = {}
    for line in target.run(script).stdout.splitlines():
        digest, _, name = line.partition("  ")
        if name:
            hashes[name] = digest
    return hashes


def sftp_sync(target: Target, source: Path, dest: str, basis: str | None) -> int:
    """Make ``dest`` on the target hold ``source``'s files; return the bytes uploaded."""
    files = sorted(p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file())
    local = {name: sha256_file(source / name) for name in files}
    there = remote_hashes(target, dest, files)
    missing = [n for n in files if there.get(n) != local[n]]
    if basis and missing:
        base = posixpath.normpath(posixpath.join(dest, basis))  # dest may not exist yet: no ".." through it
        reusable = [n for n, h in remote_hashes(target, base, missing).items() if h == local[n]]
        if reusable:
            copies = " && ".join(f"mkdir -p {shlex.quote(str(Path(dest, n).parent))} && "
                                 f"cp {shlex.quote(f'{base}/{n}')} {shlex.quote(f'{dest}/{n}')}" for n in reusable)
            target.check(copies, "copy of unchanged files on the target")
            missing = [n for n in missing if n not in reusable]
    if not missing:
        return 0
    try:
        return asyncio.run(_upload(target, source, dest, missing))
    except (OSError, asyncio.TimeoutError) as err:
        raise FlashError(f"{target.spec}: SFTP transfer failed ({err}).") from err
    except Exception as err:  # noqa: BLE001 - asyncssh's own errors (host key, auth, channel)
        raise FlashError(f"{target.spec}: SFTP transfer failed ({type(err).__name__}: {err}).") from err


async def _upload(target: Target, source: Path, dest: str, names: list[str]) -> int:
    import asyncssh

    options = {"port": target.port or 22, "username": target.user, "connect_timeout": target.ssh.connect_timeout_s}
    if target.ssh.identity:
        options["client_keys"] = [str(target.ssh.identity)]
    if target.ssh.known_hosts:  # else asyncssh reads ~/.ssh/known_hosts, as ssh does; never unchecked
        options["known_hosts"] = str(target.ssh.known_hosts)
    sent = 0
    async with asyncssh.connect(target.host, **options) as connection, connection.start_sftp_client() as sftp:
        for name in names:
            path, remote = source / name, f"{dest}/{name}"
            await sftp.makedirs(str(Path(remote).parent), exist_ok=True)
            part, size = remote + ".part", path.stat().st_size
            offset = 0
            if await sftp.exists(part):
                offset = (await sftp.stat(part)).size or 0
                offset = offset if offset <= size else 0
            async with sftp.open(part, "ab" if offset else "wb") as out:
                with path.open("rb") as handle:
                    handle.seek(offset)
                    while chunk := handle.read(CHUNK):
                        await out.write(chunk)
                        sent += len(chunk)
            await sftp.posix_rename(part, remote)
    return sent
