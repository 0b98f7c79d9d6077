"""Where a bundle goes: a local folder (a mounted SD card, this device) or ``ssh://user@host[:port]/path``.

Both kinds run the same shell steps, locally or through OpenSSH, and move files with rsync (``--checksum``
so a damaged file is replaced, ``--partial`` so a cut transfer resumes, ``--copy-dest`` so an update moves
only the files that changed). Host keys are OpenSSH's business: ``StrictHostKeyChecking=yes`` refuses an
unknown host unless ``--accept-new-host-key`` (``accept-new``) is given; a changed key is always refused.
"""

from __future__ import annotations

import re
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

