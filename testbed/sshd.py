"""A real OpenSSH server on a loopback port, with a throwaway host key and user key made by the test."""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from testbed.net import free_port

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


class Sshd:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
        self.port = free_port()
        self.user = getpass.getuser()
        self.host_key = folder / "host_ed25519"
        self.user_key = folder / "user_ed25519"
        self.known_hosts = folder / "known_hosts"
        self.process: subprocess.Popen | None = None
        for key in (self.host_key, self.user_key):
            if not key.exists():
                subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        (folder / "authorized_keys").write_text(Path(f"{self.user_key}.pub").read_text())
        os.chmod(folder / "authorized_keys", 0o600)
        (folder / "sshd_config").write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {self.host_key}\nPidFile {folder / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {folder / 'authorized_keys'}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "PubkeyAuthentication yes\nUsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\n"
            f"Subsystem sftp internal-sftp\nPermitUserEnvironment no\nLogLevel ERROR\n")

    def start(self) -> Sshd:
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # privilege separation directory
        self.process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.folder / "sshd_config")],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 20
        while time.time() < deadline:
            assert self.process.poll() is None, self.process.communicate()[1]
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.1)
        raise AssertionError("sshd did not start")

    def trust_host_key(self) -> None:
        """What `ssh-keyscan` would record: this server's key in the test's known_hosts."""
        key = Path(f"{self.host_key}.pub").read_text().split()
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {key[0]} {key[1]}\n")

    def url(self, path: Path) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
