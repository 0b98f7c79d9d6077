"""``edge station``: the dashboard's HTTP server (standard library, one thread per request, read-only).

Bound to localhost unless told otherwise; on any other address every request needs the token (a bearer
header, or ``?token=`` once from a phone's browser, kept in a cookie). Every asset comes from the package:
the page works with no network beyond the device.
"""

from __future__ import annotations

import errno
import hmac
import ipaddress
import json
import threading
from http import HTTPStatus
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import soundfile as sf

from naturelm_edge.errors import EdgeError
from naturelm_edge.station.data import StationData, temperatures
from naturelm_edge.station.live import LiveState
from naturelm_edge.station.metrics import metrics_text
from naturelm_edge.station.spectrogram import spectrogram_png

STATIC = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
          "style.css": "text/css; charset=utf-8"}
COOKIE = "station_token"


def is_local(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Station:
    """The server over one output folder; ``live`` when it runs inside ``edge-run``."""

    def __init__(self, out: Path, host: str = "127.0.0.1", port: int = 8765, token: str | None = None,
                 live: LiveState | None = None) -> None:
        if token is None and not is_local(host):
            raise EdgeError(f"{host}: the station serves other addresses only with a token; give --token-file "
                            "(the same token files as edge serve) or bind to 127.0.0.1.")
        self.data, self.live, self.token = StationData(out), live, token
        handler = type("Handler", (_Handler,), {"station": self})
        try:
            self.server = ThreadingHTTPServer((host, port), handler)
        except OSError as err:
            reason = "already in use" if err.errno == errno.EADDRINUSE else err.strerror
            raise EdgeError(f"{host}:{port}: cannot serve the station there ({reason}); choose another --port.") from err
        self.server.daemon_threads = True
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/"

    def start(self) -> Station:
        """Serve from a background thread (``edge-run --web``): a failing dashboard never stops detection."""
        self.thread = threading.Thread(target=self.server.serve_forever, name="station", daemon=True)
        self.thread.start()
        return self

    def serve_forever(self) -> None:
        try:
            self.server.serve_forever()
        finally:
            self.server.server_close()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def health(self) -> dict:
        totals = self.data.totals()
        return {"attached": self.live is not None, "store": totals, "disk": self.data.disk(),
                "temperatures": temperatures(), "live": self.live.health() if self.live else None}


class _Handler(BaseHTTPRequestHandler):
    station: Station
    server_version = "naturelm-edge-station"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's name
        pass  # requests are not worth an SD card's writes

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if not self._allowed(query):
            return
        route, _, rest = url.path.lstrip("/").partition("/")
        try:
            if url.path == "/":
                self._static("index.html")
            elif route == "static" and rest in STATIC:
                self._static(rest)
            elif url.path == "/api/events":
                after, limit = int(query.get("after", ["0"])[0]), min(int(query.get("limit", ["100"])[0]), 1000)
                self._json(self.station.data.events(limit, after))
            elif url.path == "/api/counts":
                self._json(self.station.data.counts())
            elif url.path == "/api/health":
                self._json(self.station.health())
            elif url.path == "/api/live.png" and self.station.live is not None:
                live = self.station.live
                self._send(spectrogram_png(live.audio(), live.sample_rate), "image/png")
            elif url.path == "/metrics":
                self._send(metrics_text(self.station.data, self.station.live), "text/plain; version=0.0.4")
            elif route in ("clips", "spectrogram"):
                self._clip(unquote(rest), image=route == "spectrogram")
            else:
                self._send(b"not found\n", "text/plain", HTTPStatus.NOT_FOUND)
        except (ValueError, KeyError):
            self._send(b"bad request\n", "text/plain", HTTPStatus.BAD_REQUEST)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _allowed(self, query: dict[str, list[str]]) -> bool:
        token = self.station.token
        if token is None:
            return True
        given = [self.headers.get("Authorization", "").removeprefix("Bearer ").strip(), *query.get("token", [])]
        cookie = SimpleCookie(self.headers.get("Cookie", ""))
        if COOKIE in cookie:
            given.append(cookie[COOKIE].value)
        if any(hmac.compare_digest(g.encode(), token.encode()) for g in given if g):
            if query.get("token"):  # from a browser: keep it in a cookie, drop it from the address bar
                self.send_response(HTTPStatus.SEE_OTHER)
                self.send_header("Set-Cookie", f"{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/")
                self.send_header("Location", urlsplit(self.path).path)
                self.end_headers()
                return False
            return True
        self._send(b"this station needs its token: open it as /?token=YOUR_TOKEN or send a bearer header\n",
                   "text/plain; charset=utf-8", HTTPStatus.UNAUTHORIZED)
        return False

    def _clip(self, name: str, image: bool) -> None:
        path = self.station.data.clip_file(name.removesuffix(".png") if image else name)
        if path is None:
            self._send(b"no such clip\n", "text/plain", HTTPStatus.NOT_FOUND)
        elif image:
            samples, rate = sf.read(str(path), dtype="float32", always_2d=True)
            self._send(spectrogram_png(samples.mean(axis=1), rate), "image/png")
        else:
            kind = {".flac": "audio/flac", ".wav": "audio/wav", ".ogg": "audio/ogg"}.get(path.suffix.lower(),
                                                                                      "application/octet-stream")
            self._send(path.read_bytes(), kind)

    def _static(self, name: str) -> None:
        self._send(resources.files("naturelm_edge.station").joinpath("static", name).read_bytes(), STATIC[name])

    def _json(self, payload: object) -> None:
        self._send(json.dumps(payload).encode(), "application/json")

    def _send(self, body: bytes, kind: str, status: HTTPStatus = HTTPStatus.OK) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)
