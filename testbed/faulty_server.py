"""An escalation endpoint that fails the way real ones do: 500s, silence, dropped connections, trickled bytes."""

from __future__ import annotations

import socket
import threading
import time

MODES = ("error-500", "no-answer", "closes-mid-response", "slow-loris")


class FaultyServer:
    """Accepts on a loopback port and misbehaves per ``mode``; counts the requests it received."""

    def __init__(self, mode: str) -> None:
        assert mode in MODES, mode
        self.mode, self.requests = mode, 0
        self._socket = socket.create_server(("127.0.0.1", 0))
        self._stopped = threading.Event()
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"

    def start(self) -> FaultyServer:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._socket.close()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                connection, _ = self._socket.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        with connection:
            connection.settimeout(30)
            try:
                connection.recv(1 << 20)  # the request's head and some of its body
                self.requests += 1
                if self.mode == "error-500":
                    connection.sendall(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 5\r\n\r\nerror")
                elif self.mode == "no-answer":
                    self._stopped.wait(120)
                elif self.mode == "closes-mid-response":
                    connection.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n{"escalation_id": ')
                else:  # slow-loris: a valid answer, one byte every second
                    for byte in b'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}':
                        if self._stopped.wait(1.0):
                            return
                        connection.sendall(bytes([byte]))
                        time.sleep(0)
            except OSError:
                return
