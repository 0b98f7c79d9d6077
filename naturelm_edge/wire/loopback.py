"""A stdlib HTTP server on loopback that speaks the escalation API with a fixed answer and no model.

``edge bench`` measures the device's escalation round trip against it (the network and encoding cost,
not the full model's), and tests use it where the answer's content does not matter.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from naturelm_edge.wire.schema import PATH, EscalationAnswer, EscalationRequest


class EscalationServer:
    def __init__(self, port: int = 0, answer: str = "House Sparrow") -> None:
        self.answer = answer
        self.requests: Counter[str] = Counter()
        self.answers: dict[str, str] = {}
        self.port = port
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> EscalationServer:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server naming
                if self.path != PATH:
                    self.send_error(404)
                    return
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                request = EscalationRequest(**body)
                request.audio()  # decode the clip, as a real server must
                outer.requests[request.escalation_id] += 1
                answer = outer.answers.setdefault(request.escalation_id, outer.answer)  # idempotent by id
                reply = EscalationAnswer(request.escalation_id, answer, request.question, "test-model", 1.0)
                data = json.dumps(reply.to_json()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
