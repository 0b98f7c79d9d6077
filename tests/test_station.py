"""The field station: the dashboard in a real Chromium while edge-run runs, /metrics, tokens, bad folders."""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import run_cli, run_edge

TOAD = "opensoundscape/great_plains_toad.wav"
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
needs_chromium = pytest.mark.skipif(not (CHROMIUM and DRIVER) and os.environ.get("CI") != "true",
                                    reason="Debian's chromium and chromium-driver are not installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return  # it answers (even 401)
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} never answered")


def get(url: str, headers: dict | None = None) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=420,1400",
                 "--autoplay-policy=no-user-gesture-required", "--mute-audio"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


@needs_chromium
def test_the_dashboard_shows_a_detection_while_edge_run_runs(bundle, subset_audio, tmp_path, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    inbox, out, port = tmp_path / "inbox", tmp_path / "out", free_port()
    inbox.mkdir()
    run = subprocess.Popen([sys.executable, "-c", "from naturelm_edge.cli import run_edge; run_edge()", "--bundle",
                            str(bundle), "--watch", str(inbox), "--idle-exit", "120", "--no-gate", "--no-detector",
                            "--privacy", "off", "--threshold", "0", "--out", str(out), "--web", f"127.0.0.1:{port}"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_for(url)
        browser.get(url)
        WebDriverWait(browser, 30).until(lambda d: d.find_element(By.ID, "live-section").is_displayed())
        assert browser.find_elements(By.CSS_SELECTOR, "#events tbody tr") == []
        shutil.copy(subset_audio / TOAD, inbox / "toad.wav")  # a recorder drops a file
        WebDriverWait(browser, 90).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#events tbody tr"))
        row = browser.find_element(By.CSS_SELECTOR, "#events tbody tr")
        stored = sqlite3.connect(out / "events.db").execute("SELECT label, answer FROM events ORDER BY id").fetchall()
        assert row.find_elements(By.TAG_NAME, "td")[1].text in {label or answer for label, answer in stored}
        row.find_element(By.CSS_SELECTOR, "button.play").click()
        WebDriverWait(browser, 20).until(lambda d: d.execute_script(
            "const a = document.getElementById('player-audio'); return a.readyState >= 2 && !a.error && a.duration > 0"))
        assert browser.execute_script("return document.getElementById('player-spectrogram').naturalWidth") > 0
        assert browser.execute_script("return document.getElementById('live').naturalWidth") > 0
        assert "real-time factor" in browser.find_element(By.ID, "health").text
        assert browser.find_elements(By.CSS_SELECTOR, "#hourly svg rect")  # the hour's detections, charted
        screenshot = os.environ.get("STATION_SCREENSHOT")
        browser.save_screenshot(screenshot or str(tmp_path / "station.png"))

        status, body = get(f"{url}metrics")
        text = body.decode()
        assert status == 200 and 'naturelm_edge_stage_seconds_count{stage="decoder"}' in text
        windows = sqlite3.connect(out / "events.db").execute("SELECT COUNT(*) FROM windows").fetchone()[0]
        assert f'naturelm_edge_windows_total{{bundle="{bundle_id(bundle)}",profile="x86-cpu"}} {windows:.1f}' in text
    finally:
        run.terminate()
        output = run.communicate(timeout=60)[0]
    assert run.returncode == 0, output


def bundle_id(bundle: Path) -> str:
    import json

    return json.loads((bundle / "manifest.json").read_text())["bundle_id"]


@needs_chromium
def test_a_station_on_another_address_needs_its_token(bundle, subset_audio, tmp_path, browser):
    out = tmp_path / "out"
    assert run_edge("--bundle", str(bundle), str(subset_audio / TOAD), "--no-gate", "--no-detector", "--privacy", "off",
                    "-q", "--out", str(out)).returncode == 0
    tokens = tmp_path / "tokens"
    tokens.write_text("# station\nfield-secret\n")
    refused = run_cli("station", str(out), "--host", "0.0.0.0", "--port", str(free_port()), timeout=60)
    assert refused.returncode != 0 and "only with a token" in refused.stderr and "Traceback" not in refused.stderr
    port = free_port()
    station = subprocess.Popen([sys.executable, "-c", "from naturelm_edge.cli import run; run()", "station", str(out),
                                "--host", "0.0.0.0", "--port", str(port), "--token-file", str(tokens)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(url)
        for path in ("/", "/api/events", "/metrics"):
            assert get(url + path)[0] == 401
            assert get(url + path, {"Authorization": "Bearer wrong"})[0] == 401
        status, body = get(url + "/api/events", {"Authorization": "Bearer field-secret"})
        assert status == 200 and b"great_plains_toad" in body
        browser.get(url + "/")
        assert "needs its token" in browser.page_source
        browser.get(url + "/?token=field-secret")  # from a phone: once in the address, then a cookie
        assert browser.current_url == url + "/"
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#events tbody tr"))
        # the health list is drawn after the events and counts arrive: wait for it rather than race it
        WebDriverWait(browser, 20).until(lambda d: "not attached" in d.find_element(By.ID, "health").text)
    finally:
        station.terminate()
        station.wait(timeout=30)


def test_the_station_names_what_is_wrong(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    missing = run_cli("station", str(empty), "--port", str(free_port()), timeout=60)
    assert missing.returncode != 0 and "no events.db" in missing.stderr and "Traceback" not in missing.stderr

    newer = tmp_path / "newer"
    newer.mkdir()
    db = sqlite3.connect(newer / "events.db")
    db.execute("PRAGMA user_version = 99")
    db.close()
    refused = run_cli("station", str(newer), "--port", str(free_port()), timeout=60)
    assert refused.returncode != 0 and "newer naturelm-edge" in refused.stderr

    from naturelm_edge.edge_runtime.store import EventStore

    EventStore(empty / "events.db").close()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = run_cli("station", str(empty), "--port", str(taken.getsockname()[1]), timeout=60)
    assert busy.returncode != 0 and "already in use" in busy.stderr
