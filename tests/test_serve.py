"""`edge serve`: the tiny checkpoint served for real on loopback, and edge-run escalating to it."""

from __future__ import annotations

import concurrent.futures
import datetime
import http.client
import json
import os
import shutil
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from naturelm_edge.sample_data import synthetic_soundscape
from naturelm_edge.wire.client import post_escalation
from naturelm_edge.wire.schema import PATH
from testbed.net import free_port
from testbed.serve import Server, request
from tests.helpers import events, run_cli, run_edge

TOKEN = "field-team-7f3a"


@pytest.fixture(scope="module")
def token_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tokens") / "tokens.txt"
    path.write_text(f"# one token per line\n{TOKEN}\nanother-device-token\n")
    return path


@pytest.fixture(scope="module")
def server(taught_teacher, token_file, tmp_path_factory):
    running = Server(taught_teacher, tmp_path_factory.mktemp("state"), "--token-file", str(token_file),
                     "--max-wait-ms", "200", "--max-batch", "4").start()
    yield running
    running.stop()


def post_raw(url: str, body: bytes, headers: dict) -> tuple[int, dict]:
    req = urllib.request.Request(url + PATH, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def test_health_model_and_openapi(server):
    info = json.loads(urllib.request.urlopen(server.url + "/v1/model").read())
    assert info["model_id"].startswith("naturelm:") and info["auth"] is True and info["schema"] == 1
    spec = json.loads(urllib.request.urlopen(server.url + "/openapi.json").read())
    assert PATH in spec["paths"] and "/healthz" in spec["paths"]


def test_edge_run_escalates_to_the_served_model(server, bundle, subset_audio, token_file, tmp_path):
    clip = subset_audio / "opensoundscape" / "great_plains_toad.wav"
    before = server.metric("escalation_inferences_total")
    result = run_edge("--bundle", str(bundle), "--input", str(clip), "--out", str(tmp_path / "out"), "--profile", "x86-cpu",
                      "--escalate", server.url, "--token-file", str(token_file), "--threshold", "1.01", "--no-gate", "-q")
    assert result.returncode == 0, result.stderr
    escalated = [e for e in events(tmp_path / "out") if e["escalation_status"] != "none"]
    assert escalated and all(e["escalation_status"] in ("confirmed", "revised") for e in escalated)
    assert all(e["escalation_answer"] for e in escalated)  # the served model's words, beside the device's
    assert server.metric("escalation_inferences_total") - before == len(escalated)


def test_wrong_token_is_refused_and_nothing_is_processed(server):
    before = server.metric("escalation_inferences_total")
    body = json.dumps(request("wrong-token:1").to_json()).encode()
    for headers in ({"Authorization": "Bearer not-the-token"}, {}):
        status, reply = post_raw(server.url, body, {"Content-Type": "application/json", **headers})
        assert status == 401 and "token" in reply["error"]
    assert server.metric("escalation_inferences_total") == before


def test_oversized_and_non_audio_uploads(server):
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    # a 7 MB upload is refused from its headers, before the body is read or anything is processed
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    connection.putrequest("POST", PATH)
    for key, value in {**auth, "Content-Length": str(7 * 1024 * 1024)}.items():
        connection.putheader(key, value)
    connection.endheaders(b'{"escalation_id": "big:1", ')
    response = connection.getresponse()
    assert response.status == 413 and "exceeds the limit" in json.loads(response.read())["error"]
    connection.close()
    junk = request("junk:1").to_json() | {"audio_flac_b64": "bm90IGF1ZGlvIGF0IGFsbA=="}  # "not audio at all"
    status, reply = post_raw(server.url, json.dumps(junk).encode(), auth)
    assert status == 415 and "no FLAC or WAV audio" in reply["error"]
    bad_rate = request("rate:1").to_json() | {"sample_rate": 0}
    status, reply = post_raw(server.url, json.dumps(bad_rate).encode(), auth)
    assert status == 422 and "sample_rate 0" in reply["error"]
    status, reply = post_raw(server.url, b"RIFF....", {**auth, "Content-Type": "audio/wav"})
    assert status == 415 and "application/json" in reply["error"]


def test_wav_clips_are_accepted_too(server):
    import base64
    import io

    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, synthetic_soundscape(4.0, 22_050), 22_050, format="WAV", subtype="PCM_16")
    body = request("wav:1").to_json() | {"audio_flac_b64": base64.b64encode(buffer.getvalue()).decode(), "sample_rate": 22_050}
    status, reply = post_raw(server.url, json.dumps(body).encode(), {"Authorization": f"Bearer {TOKEN}",
                                                                     "Content-Type": "application/json"})
    assert status == 200 and reply["escalation_id"] == "wav:1" and reply["prompt"]


def test_duplicate_escalation_id_gets_the_same_answer_from_one_inference(server):
    before = server.metric("escalation_inferences_total")
    same = request("duplicate:42", seed=3)
    with concurrent.futures.ThreadPoolExecutor(3) as pool:  # a retry racing the original
        replies = list(pool.map(lambda _: post_escalation(server.url, same, TOKEN, 60), range(3)))
    replies.append(post_escalation(server.url, same, TOKEN, 60))  # and one after the answer
    assert len({json.dumps(r, sort_keys=True) for r in replies}) == 1
    assert server.metric("escalation_inferences_total") - before == 1


def test_concurrent_requests_are_batched(server):
    batches_before = server.metric("escalation_batch_size_count")
    inferences_before = server.metric("escalation_inferences_total")
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda i: post_escalation(server.url, request(f"batch:{i}", seed=i), TOKEN, 60), range(8)))
    assert {r["escalation_id"] for r in replies} == {f"batch:{i}" for i in range(8)}
    inferences = server.metric("escalation_inferences_total") - inferences_before
    batches = server.metric("escalation_batch_size_count") - batches_before
    assert inferences == 8 and batches < 8  # at least one forward pass answered several clips


def test_rate_limit(server):
    """Each token has its own bucket (burst 60): one device hammering the server does not lock out the others."""
    from concurrent.futures import ThreadPoolExecutor

    hammer = {"Content-Type": "application/json", "Authorization": "Bearer another-device-token"}
    # 16 at a time: faster than the bucket refills (10 a second) however slow a loaded machine answers
    with ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(lambda _: post_raw(server.url, b"{}", hammer)[0], range(240)))
    assert set(codes) == {422, 429} and codes.count(422) >= 60  # the burst is processed, then the limiter refuses
    status, reply = post_raw(server.url, b"{}", {**hammer, "Authorization": f"Bearer {TOKEN}"})
    assert status == 422  # the other token still gets through to validation


def test_server_killed_mid_request_keeps_the_escalation_queued(taught_teacher, bundle, subset_audio, token_file, tmp_path):
    state = tmp_path / "state"
    # a long batching wait holds every request inside the server long enough to kill it there
    slow = Server(taught_teacher, state, "--token-file", str(token_file), "--max-wait-ms", "60000").start()
    clip = subset_audio / "opensoundscape" / "great_plains_toad.wav"
    args = ["--bundle", str(bundle), "--input", str(clip), "--out", str(tmp_path / "out"), "--profile", "x86-cpu",
            "--escalate", slow.url, "--token-file", str(token_file), "--threshold", "1.01", "--no-gate", "-q"]
    device = subprocess.Popen([sys.executable, "-c", "from naturelm_edge.cli import run_edge; run_edge()", *args],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and slow.metric("escalation_queue_depth") < 1:
        time.sleep(0.2)
    slow.kill()  # mid-request: the device never gets its answer
    assert device.wait(timeout=300) == 0, device.communicate()[1]
    queued = [e for e in events(tmp_path / "out") if e["escalation_status"] == "queued"]
    assert queued
    restarted = Server(taught_teacher, state, "--token-file", str(token_file)).start()
    try:
        args[args.index(slow.url)] = restarted.url
        again = run_edge(*args)
        assert again.returncode == 0, again.stderr
        after = {e["id"]: e for e in events(tmp_path / "out")}
        assert all(after[e["id"]]["escalation_status"] in ("confirmed", "revised") for e in queued)
        assert restarted.metric("escalation_inferences_total") == len(queued)  # each delivered once
    finally:
        restarted.stop()


def test_two_workers_share_answers(taught_teacher, tmp_path):
    pool_server = Server(taught_teacher, tmp_path / "state", "--workers", "2").start()
    try:
        same = request("shared:1")
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            first = list(pool.map(lambda i: post_escalation(pool_server.url, request(f"w:{i}", seed=i), None, 60), range(4)))
        assert len(first) == 4
        a = post_escalation(pool_server.url, same, None, 60)
        b = [post_escalation(pool_server.url, same, None, 60) for _ in range(4)]  # whichever worker takes them
        assert all(r == a for r in b)
    finally:
        pool_server.stop()


def test_tls(taught_teacher, tmp_path):
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    context = ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))
    secure = Server(taught_teacher, tmp_path / "state", "--tls-cert", str(tmp_path / "cert.pem"), "--tls-key",
                    str(tmp_path / "key.pem"), scheme="https").start(context)
    try:
        with urllib.request.urlopen(secure.url + "/v1/model", context=context, timeout=10) as r:
            assert json.loads(r.read())["schema"] == 1
        with pytest.raises(urllib.error.URLError):  # a client that does not trust the certificate is refused
            urllib.request.urlopen(secure.url + "/healthz", timeout=10, context=ssl.create_default_context())
    finally:
        secure.stop()


def test_serve_refuses_half_a_tls_pair(taught_teacher, tmp_path):
    result = run_cli("serve", str(taught_teacher), "--tls-cert", str(tmp_path / "cert.pem"), timeout=120)
    assert result.returncode != 0 and "--tls-key" in result.stderr


@pytest.mark.skipif(shutil.which("nginx") is None and os.environ.get("CI") != "true",
                    reason="nginx is not installed (CI installs nginx-light)")
def test_two_machines_behind_nginx_answer_each_escalation_once(taught_teacher, tmp_path):
    """deploy/nginx.conf in front of two servers that share nothing: retries reach the one that answered."""
    servers = [Server(taught_teacher, tmp_path / f"machine-{i}").start() for i in range(2)]
    port = free_port()
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    conf = (Path(__file__).parents[1] / "deploy" / "nginx.conf").read_text()
    conf = (conf.replace("@LISTEN@", f"127.0.0.1:{port}").replace("@PREFIX@", str(prefix))
            .replace("@SERVERS@", " ".join(f"server 127.0.0.1:{s.port};" for s in servers)))
    (prefix / "nginx.conf").write_text(conf)
    balancer = subprocess.Popen([shutil.which("nginx") or "nginx", "-c", str(prefix / "nginx.conf"), "-p", str(prefix),
                                 "-g", "daemon off;"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                urllib.request.urlopen(url + "/healthz", timeout=2)
                break
            except (urllib.error.URLError, OSError):
                assert balancer.poll() is None, balancer.communicate()[1]
                time.sleep(0.2)
        ids = [f"fleet:{i}" for i in range(8)]
        first = {i: post_escalation(url, request(i, seed=n), None, 60) for n, i in enumerate(ids)}
        retries = {i: post_escalation(url, request(i, seed=n), None, 60) for n, i in enumerate(ids)}  # lost responses
        assert retries == first
        per_machine = [s.metric("escalation_inferences_total") for s in servers]
        assert sum(per_machine) == len(ids)  # one inference per escalation across the fleet
    finally:
        balancer.terminate()
        balancer.wait(timeout=10)
        for s in servers:
            s.stop()
