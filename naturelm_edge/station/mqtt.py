"""``edge-run --mqtt``: every event to an MQTT broker, once, in order, from the event store.

The store is the outbox: a mark per broker (``published`` table) says which event went out last, and it
moves only when the broker has acknowledged the event (QoS 1 PUBACK). A broker that is down for hours, or
an ``edge-run`` that restarts, costs nothing: the next connection sends what the mark has not passed.
Home Assistant finds the device by itself (MQTT discovery, retained); a retained status message (with a
last will) says whether the station is online and how it is doing.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

from naturelm_edge.errors import EdgeError
from naturelm_edge.station.data import EVENT_COLUMNS
from naturelm_edge.station.live import LiveState

STATUS_EVERY_S = 30.0
FLUSH_AT_EXIT_S = 5.0


def read_credentials(path: Path) -> tuple[str, str]:
    """``USER:PASSWORD`` from the first non-comment line of a token file."""
    from naturelm_edge.wire.schema import read_tokens

    lines = read_tokens(path) if path.is_file() else []
    if not lines or ":" not in lines[0]:
        raise EdgeError(f"{path}: no MQTT credentials in it (one line USER:PASSWORD).")
    user, _, password = lines[0].partition(":")
    return user, password


class MqttPublisher:
    def __init__(self, db_path: Path, url: str, topic: str, live: LiveState | None = None,
                 credentials: tuple[str, str] | None = None, ca_file: Path | None = None,
                 console=None) -> None:  # noqa: ANN001 - a rich Console
        import paho.mqtt.client as mqtt

        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise EdgeError(f"--mqtt {url}: give mqtt://HOST[:PORT] or mqtts://HOST[:PORT] (TLS).")
        self.db_path, self.live = Path(db_path), live
        self.host, self.port = parts.hostname, parts.port or (8883 if parts.scheme == "mqtts" else 1883)
        self.sink = f"mqtt:{self.host}:{self.port}"
        self.device = socket.gethostname().replace(".", "-") or "edge"
        self.base = f"{topic.rstrip('/')}/{self.device}"
        if console is None:
            from rich.console import Console

            console = Console(stderr=True)
        self.console = console
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"naturelm-edge-{self.device}")
        if credentials:
            self.client.username_pw_set(*credentials)
        if parts.scheme == "mqtts":  # the system's CAs, or the broker's own (a self-signed station broker)
            self.client.tls_set(ca_certs=str(ca_file) if ca_file else None)
        self.client.will_set(f"{self.base}/status", json.dumps({"state": "offline"}), qos=1, retain=True)
        self.client.reconnect_delay_set(1, 60)  # back off to a minute: a dead broker never eats a CPU
        self.client.on_connect = self._connected
        self.connected = threading.Event()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="mqtt", daemon=True)
        self.said: set[str] = set()

    def start(self) -> MqttPublisher:
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()
        self.thread.start()
        return self

    def close(self) -> None:
        """Send what is pending for a few seconds, then stop; what is left goes out on the next run."""
        deadline = time.monotonic() + FLUSH_AT_EXIT_S
        while time.monotonic() < deadline and self.pending() and self.connected.is_set():
            time.sleep(0.1)
        self.stopping.set()
        self.thread.join(timeout=FLUSH_AT_EXIT_S)
        left = self.pending()
        if left:
            self.console.print(f"mqtt: {left} event(s) wait for {self.host}:{self.port}; the next run sends them.")
        if self.connected.is_set():
            self.client.publish(f"{self.base}/status", json.dumps({"state": "offline"}), qos=1, retain=True).wait_for_publish(2)
        self.client.disconnect()
        self.client.loop_stop()

    def _connected(self, client, userdata, flags, reason, properties) -> None:  # noqa: ANN001 - paho's callback
        if reason.is_failure:
            self._say(f"mqtt: {self.host}:{self.port} refused the connection ({reason}); detection goes on, "
                      "events wait in the store.")
            return
        self.said.clear()
        for topic, config in self.discovery().items():
            client.publish(topic, json.dumps(config), qos=1, retain=True)
        self.connected.set()

    def _say(self, line: str) -> None:
        if line not in self.said:  # once per outage, not once per retry
            self.said.add(line)
            self.console.print(line)

    def discovery(self) -> dict[str, dict]:
        """Home Assistant MQTT discovery: a device with a 'last detection' sensor and a status sensor."""
        device = {"identifiers": [f"naturelm-edge-{self.device}"], "name": f"naturelm-edge {self.device}",
                  "manufacturer": "naturelm-edge", "model": self.live.profile if self.live else "edge-run"}
        availability = {"availability_topic": f"{self.base}/status", "availability_template": "{{ value_json.state }}",
                        "payload_available": "online", "payload_not_available": "offline"}
        return {
            f"homeassistant/sensor/naturelm-edge-{self.device}/detection/config": {
                "name": "Last detection", "unique_id": f"naturelm-edge-{self.device}-detection",
                "state_topic": f"{self.base}/last", "value_template": "{{ value_json.label or value_json.answer }}",
                "json_attributes_topic": f"{self.base}/last", "icon": "mdi:bird", "device": device, **availability},
            f"homeassistant/sensor/naturelm-edge-{self.device}/rtf/config": {
                "name": "Real-time factor", "unique_id": f"naturelm-edge-{self.device}-rtf",
                "state_topic": f"{self.base}/status", "value_template": "{{ value_json.real_time_factor }}",
                "device": device, **availability},
        }

    def _run(self) -> None:
        db = sqlite3.connect(str(self.db_path), timeout=30, isolation_level=None)
        try:
            next_status = 0.0
            while not self.stopping.is_set():
                if not self.client.is_connected():
                    self.connected.clear()
                    self.stopping.wait(0.5)
                    continue
                if time.monotonic() >= next_status:
                    self._publish_status()
                    next_status = time.monotonic() + STATUS_EVERY_S
                if not self._send_next(db):
                    self.stopping.wait(0.5)
        finally:
            db.close()

    def _send_next(self, db: sqlite3.Connection) -> bool:
        """Publish the event after the mark and move the mark once the broker acknowledged it."""
        db.row_factory = sqlite3.Row
        row = db.execute(f"SELECT {', '.join(EVENT_COLUMNS)}, confidence_min, question FROM events WHERE id > ? "
                         "ORDER BY id LIMIT 1", (self._mark(db),)).fetchone()
        if row is None:
            return False
        payload = json.dumps({**dict(row), "device": self.device,
                              "answered_by": "full model" if row["escalation_status"] in ("confirmed", "revised")
                              else "device"})
        info = self.client.publish(f"{self.base}/events", payload, qos=1)
        while not info.is_published():  # paho re-sends it itself after a reconnect: never publish it twice
            if self.stopping.is_set():
                return False
            info.wait_for_publish(timeout=0.5)
        self.client.publish(f"{self.base}/last", payload, qos=1, retain=True)
        db.execute("INSERT INTO published (sink, last_event_id) VALUES (?, ?) ON CONFLICT(sink) DO UPDATE "
                   "SET last_event_id = excluded.last_event_id", (self.sink, row["id"]))
        return True

    def _mark(self, db: sqlite3.Connection) -> int:
        row = db.execute("SELECT last_event_id FROM published WHERE sink = ?", (self.sink,)).fetchone()
        return int(row[0]) if row else 0

    def pending(self) -> int:
        db = sqlite3.connect(str(self.db_path), timeout=30)
        try:
            return db.execute("SELECT COUNT(*) FROM events WHERE id > COALESCE((SELECT last_event_id FROM published "
                              "WHERE sink = ?), 0)", (self.sink,)).fetchone()[0]
        finally:
            db.close()

    def _publish_status(self) -> None:
        status = {"state": "online", "device": self.device, **(self.live.health() if self.live else {})}
        self.client.publish(f"{self.base}/status", json.dumps(status), qos=1, retain=True)
