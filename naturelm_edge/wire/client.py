"""The device side of the escalation API: one POST, checked against the schema both sides share."""

from __future__ import annotations

import json
import urllib.request

from naturelm_edge.wire.schema import PATH, EscalationRequest


def post_escalation(url: str, request: EscalationRequest, token: str | None = None, timeout_s: float = 10.0) -> dict:
    """Send one escalation to ``url`` and return the server's answer (raises on any transport error)."""
    body = json.dumps(request.to_json()).encode()
    headers = {"Content-Type": "application/json", "Idempotency-Key": request.escalation_id}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url.rstrip("/") + PATH, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(req, timeout=timeout_s) as response:  # noqa: S310 - the user's endpoint
        reply = json.loads(response.read())
    if reply.get("escalation_id") != request.escalation_id or "answer" not in reply:
        raise ValueError("the server answered another escalation")
    return reply
