"""The device side of the escalation API: one POST, checked against the schema both sides share.

Every request has a hard deadline for the whole exchange, not only per socket operation: a server that
accepts and never answers, or trickles its answer a byte at a time (a slow-loris peer), costs the device
``timeout_s`` and no more.
"""

from __future__ import annotations

import http.client
import json
import threading
import urllib.parse

from naturelm_edge.wire.schema import PATH, EscalationRequest


def _exchange(url: str, body: bytes, headers: dict, timeout_s: float, held: list) -> dict:
    parts = urllib.parse.urlsplit(url)
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = kind(parts.hostname, parts.port, timeout=timeout_s)
    held.append(connection)
    try:
        connection.request("POST", parts.path.rstrip("/") + PATH, body=body, headers=headers)
        response = connection.getresponse()
        data = response.read()
    finally:
        connection.close()
    if response.status != 200:
        raise OSError(f"the server answered {response.status} {response.reason}")
    return json.loads(data)


def post_escalation(url: str, request: EscalationRequest, token: str | None = None, timeout_s: float = 10.0) -> dict:
    """Send one escalation to ``url`` and return the server's answer.

    Raises ``OSError`` (refused, reset, an HTTP error status), ``TimeoutError`` (no whole answer within
    ``timeout_s``) or ``ValueError`` (an answer that is not this escalation's).
    """
    body = json.dumps(request.to_json()).encode()
    headers = {"Content-Type": "application/json", "Idempotency-Key": request.escalation_id}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    outcome: dict = {}
    held: list = []

    def run() -> None:
        try:
            outcome["reply"] = _exchange(url, body, headers, timeout_s, held)
        except Exception as err:  # noqa: BLE001 - handed to the caller below
            outcome["error"] = err

    worker = threading.Thread(target=run, name="escalation-post", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        for connection in held:
            connection.close()  # unblocks the worker; its late result is dropped
        raise TimeoutError(f"{url}: no complete answer within {timeout_s:g} s")
    if "error" in outcome:
        raise outcome["error"]
    reply = outcome["reply"]
    if reply.get("escalation_id") != request.escalation_id or "answer" not in reply:
        raise ValueError("the server answered another escalation")
    return reply
