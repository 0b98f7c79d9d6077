"""Where a bundle goes: a local folder (a mounted SD card, this device) or ``ssh://user@host[:port]/path``.

Both kinds run the same shell steps, locally or through OpenSSH, and move files with rsync (``--checksum``
so a damaged file is replaced, ``--partial`` so a cut transfer resumes, ``--copy-dest`` so an update moves
only the files that changed). Host keys are OpenSSH's business: ``StrictHostKeyChecking=yes`` refuses an
unknown host unless ``--accept-new-host-key`` (``accept-new``) is given; a changed key is always refused.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from naturelm_edge.errors import EdgeError


class FlashError(EdgeError):
    """A flash step failed on a target; the message names the target and the step."""


@dataclass
class SshOptions:
    identity: Path | None = None
    known_hosts: Path | None = None
    accept_new_host_key: bool = False
    connect_timeout_s: int = 10
    bwlimit_kbps: int | None = None  # rsync --bwlimit: leave room on a shared field link
    transfer: str = "auto"  # auto (rsync when both ends have it, else SFTP) | rsync | sftp

    def args(self, port: int | None) -> list[str]:
        args = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={self.connect_timeout_s}",
                "-o", f"StrictHostKeyChecking={'accept-new' if self.accept_new_host_key else 'yes'}"]
        if self.known_hosts:
            args += ["-o", f"UserKnownHostsFile={self.known_hosts}"]
        if self.identity:
            args += ["-i", str(self.identity), "-o", "IdentitiesOnly=yes"]
        if port:
            args += ["-p", str(port)]
        return args


@dataclass
class Target:
    """One device: ``root`` holds ``bundles/<id>/``, and the ``current`` and ``previous`` symlinks."""

    spec: str
    root: str
    host: str | None = None
    user: str | None = None
    port: int | None = None
    ssh: SshOptions = field(default_factory=SshOptions)

    @classmethod
    def parse(cls, spec: str, ssh: SshOptions | None = None) -> Target:
        ssh = ssh or SshOptions()
        if spec.startswith("ssh://"):
            url = urlparse(spec)
            if not url.hostname or not url.path or url.path == "/":
                raise FlashError(f"{spec}: an ssh target is ssh://user@host[:port]/path/to/root.")
            return cls(spec, url.path, url.hostname, url.username, url.port, ssh)
        if re.match(r"^[a-z]+://", spec):
            raise FlashError(f"{spec}: a target is a local path or ssh://user@host[:port]/path.")
        return cls(spec, str(Path(spec).expanduser().resolve()), ssh=ssh)

    @property
    def remote(self) -> bool:
        return self.host is not None

    @property
    def address(self) -> str:
        return f"{self.user}@{self.host}" if self.user else str(self.host)

    def run(self, script: str, stdin: str | None = None, timeout_s: float = 600) -> subprocess.CompletedProcess:
        """Run a shell ``script`` on the target (through ssh when remote)."""
        command = ["ssh", *self.ssh.args(self.port), self.address, script] if self.remote else ["sh", "-c", script]
        try:
            return subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired as err:
            raise FlashError(f"{self.spec}: no answer within {timeout_s:.0f} s.") from err

    def check(self, script: str, step: str, stdin: str | None = None, timeout_s: float = 600) -> str:
        result = self.run(script, stdin, timeout_s)
        if result.returncode != 0:
            detail = (result.stderr.strip() or result.stdout.strip()).splitlines()
            raise FlashError(f"{self.spec}: {step} failed ({detail[-1] if detail else f'exit {result.returncode}'}).")
        return result.stdout

    def sync(self, source: Path, dest: str, basis: str | None, rsync_there: bool = True, timeout_s: float = 3600) -> int:
        """Copy ``source/`` into ``dest`` on the target; return the bytes sent over the wire.

        rsync when both ends have it (or when asked), else SFTP for ssh targets (see ``flash.sftp``).
        """
        have_rsync = shutil.which("rsync") is not None and rsync_there
        method = self.ssh.transfer if self.ssh.transfer != "auto" else ("rsync" if have_rsync else "sftp")
        if method == "sftp":
            if not self.remote:
                raise FlashError(f"{self.spec}: SFTP is for ssh targets; install rsync to flash local paths.")
            from naturelm_edge.flash.sftp import sftp_sync

            return sftp_sync(self, source, dest, basis)
        command = ["rsync", "-a", "--checksum", "--partial", "--delete", "--stats"]
        if basis:
            command.append(f"--copy-dest={basis}")
        if self.ssh.bwlimit_kbps:
            command.append(f"--bwlimit={self.ssh.bwlimit_kbps}")
        if self.remote:
            command += ["-e", shlex.join(["ssh", *self.ssh.args(self.port)]), f"{source}/", f"{self.address}:{dest}/"]
        else:
            command += [f"{source}/", f"{dest}/"]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired as err:
            raise FlashError(f"{self.spec}: transfer did not finish within {timeout_s:.0f} s.") from err
        if result.returncode != 0:
            lines = result.stderr.strip().splitlines()
            raise FlashError(f"{self.spec}: transfer failed ({lines[-1] if lines else f'rsync exit {result.returncode}'}).")
        sent = re.search(r"Total bytes sent: ([\d,.]+)", result.stdout)
        return int(re.sub(r"[,.]", "", sent.group(1))) if sent else 0
