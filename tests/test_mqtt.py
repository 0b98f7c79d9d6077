"""edge-run --mqtt against a real mosquitto: every event once, in order, across a broker outage and restarts."""

from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import run_edge

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
pytestmark = pytest.mark.skipif(MOSQUITTO is None and os.environ.get("CI") != "true",
                                reason="Debian's mosquitto is not installed")
TOAD = "opensoundscape/great_plains_toad.wav"


class Broker:
    """One mosquitto on a free port, persistent (its queued messages survive a restart)."""

    def __init__(self, root: Path, password_file: Path | None = None, tls: tuple[Path, Path, Path] | None = None) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        root.mkdir(parents=True, exist_ok=True)
        self.config = root / "mosquitto.conf"
        auth = f"allow_anonymous false\npassword_file {password_file}\n" if password_file else "allow_anonymous true\n"
        if tls:
            auth += f"cafile {tls[0]}\ncertfile {tls[1]}\nkeyfile {tls[2]}\n"
        # as root mosquitto would switch to its own user, who cannot read the test's files
        self.config.write_text(f"user {getpass.getuser()}\nlistener {self.port} 127.0.0.1\n{auth}persistence true\n"
                               f"persistence_location {root}/\nautosave_interval 1\n")
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen([MOSQUITTO, "-c", str(self.config)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise AssertionError("mosquitto did not start")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


class Subscriber:
    """Home Assistant's side: a persistent QoS 1 session on every topic of the station."""

    def __init__(self, port: int, login: tuple[str, str] | None = None, ca: Path | None = None) -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, dict, bool]] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-home", clean_session=False)
        if login:
            self.client.username_pw_set(*login)
        if ca:
            self.client.tls_set(ca_certs=str(ca))
        self.client.on_connect = lambda c, *_: c.subscribe([("naturelm-edge/#", 1), ("homeassistant/#", 1)])
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, json.loads(m.payload), m.retain))
        self.client.reconnect_delay_set(0.2, 1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def event_ids(self) -> list[int]:
        return [payload["id"] for topic, payload, _ in self.messages if topic.endswith("/events")]

    def wait_for(self, count: int, timeout: float = 60) -> list[int]:
        deadline = time.monotonic() + timeout
        while len(self.event_ids()) < count and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)  # and nothing more arrives
        return self.event_ids()


def stored_ids(out: Path) -> list[int]:
    return [r[0] for r in sqlite3.connect(out / "events.db").execute("SELECT id FROM events ORDER BY id")]


def edge_run(bundle: Path, recording: Path, out: Path, port: int, *extra: str, url: str | None = None):
    return run_edge("--bundle", str(bundle), str(recording), "--no-gate", "--no-detector", "--privacy", "off", "-q",
                    "--out", str(out), "--mqtt", url or f"mqtt://127.0.0.1:{port}", *extra)


def test_every_event_reaches_the_broker_once_in_order_across_an_outage(bundle, subset_audio, tmp_path):
    broker = Broker(tmp_path / "broker")
    broker.start()
    home = Subscriber(broker.port)
    out = tmp_path / "out"
    recordings = [subset_audio / TOAD, *sorted((subset_audio / "phoebe").glob("*.mp3"))[:2]]
    try:
        first = edge_run(bundle, recordings[0], out, broker.port)
        assert first.returncode == 0, first.stderr
        assert home.wait_for(len(stored_ids(out))) == stored_ids(out)

        broker.stop()  # the broker goes away for a while: detection goes on, events wait in the store
        second = edge_run(bundle, recordings[1], out, broker.port)
        assert second.returncode == 0, second.stderr
        waiting = len(stored_ids(out)) - len(home.event_ids())
        assert waiting > 0 and f"{waiting} event(s) wait for 127.0.0.1:{broker.port}" in second.stderr

        broker.start()  # back: the next run sends what waited, then its own, each once and in order
        third = edge_run(bundle, recordings[2], out, broker.port)
        assert third.returncode == 0, third.stderr
        assert home.wait_for(len(stored_ids(out))) == stored_ids(out)
    finally:
        home.client.loop_stop()
        broker.stop()
    configs = {topic: payload for topic, payload, _ in home.messages if topic.startswith("homeassistant/")}
    sensor = next(p for t, p in configs.items() if t.endswith("/detection/config"))
    assert sensor["state_topic"].endswith("/last") and sensor["device"]["identifiers"]
    last = [payload for topic, payload, _ in home.messages if topic.endswith("/last")][-1]
    assert last["id"] == stored_ids(out)[-1] and {"label", "confidence", "start_utc", "device", "bundle_id",
                                                   "answered_by"} <= set(last)
    states = [payload["state"] for topic, payload, _ in home.messages if topic.endswith("/status")]
    assert "online" in states and states[-1] == "offline"  # said at every clean exit


def certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it (a station broker's own, self-signed)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def name(text: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("station CA")).issuer_name(name("station CA"))
          .public_key(ca_key.public_key()).serial_number(1).not_valid_before(now)
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(ca_key, hashes.SHA256()))
    import ipaddress

    server = (x509.CertificateBuilder().subject_name(name("127.0.0.1")).issuer_name(ca.subject)
              .public_key(key.public_key()).serial_number(2).not_valid_before(now)
              .not_valid_after(now + datetime.timedelta(days=1))
              .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                             critical=False).sign(ca_key, hashes.SHA256()))
    paths = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


def test_tls_and_credentials_a_refused_login_never_stops_detection(bundle, subset_audio, tmp_path):
    """Over TLS with the broker's own CA: a wrong password is said once and detection goes on; with the right
    one the next run delivers the waiting events and its own."""
    ca, cert, key = certificates(tmp_path)
    passwords = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), "station", "right"], check=True)
    broker = Broker(tmp_path / "broker", passwords, tls=(ca, cert, key))
    broker.start()
    home = Subscriber(broker.port, ("station", "right"), ca)
    out, credentials = tmp_path / "out", tmp_path / "mqtt-token"
    url = f"mqtts://127.0.0.1:{broker.port}"
    tls = ("--mqtt-token-file", str(credentials), "--mqtt-ca", str(ca))
    try:
        credentials.write_text("station:wrong\n")
        refused = edge_run(bundle, subset_audio / TOAD, out, broker.port, *tls, url=url)
        assert refused.returncode == 0, refused.stderr
        assert refused.stderr.count("refused the connection") == 1 and stored_ids(out)  # once, not per retry
        assert home.event_ids() == []
        credentials.write_text("# the station's login\nstation:right\n")
        phoebe = sorted((subset_audio / "phoebe").glob("*.mp3"))[0]
        accepted = edge_run(bundle, phoebe, out, broker.port, *tls, url=url)
        assert accepted.returncode == 0, accepted.stderr
        assert home.wait_for(len(stored_ids(out))) == stored_ids(out)
    finally:
        home.client.loop_stop()
        broker.stop()
