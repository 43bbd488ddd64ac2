"""The attention viewer: patterns from the model's hooks, and the page driven in headless Chromium.

Chromium is driven over the DevTools protocol with a minimal websocket client written
here on the standard library, so the test needs nothing beyond the ``chromium`` binary.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest

from figures.__main__ import main
from figures.viewer import SCALE, attention_patterns, write_viewer
from headprobe.cli import run_main
from headprobe.stories import find_story, read_stories
from headprobe.tokens import token_strings

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(n)), None)
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run",
                  "--remote-debugging-port=0", "--window-size=1200,900"]


class DevTools:
    """A blocking Chrome DevTools protocol client over one websocket (RFC 6455, text frames)."""

    def __init__(self, ws_url: str, timeout: float = 20.0):
        url = urlparse(ws_url)
        self.sock = socket.create_connection((url.hostname, url.port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {url.path} HTTP/1.1\r\nHost: {url.hostname}:{url.port}\r\n"
                           "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
                          .encode())
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            head += self._read(1)
        if b" 101 " not in head.split(b"\r\n")[0]:
            raise ConnectionError(f"websocket handshake refused: {head[:80]!r}")
        self.next_id = 0

    def _read(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("DevTools connection closed")
            buf += chunk
        return buf

    def _send(self, text: str) -> None:
        payload = text.encode()
        n = len(payload)
        header = bytes([0x81])  # final frame, text
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)  # clients must mask every frame
        body = (np.frombuffer(payload, np.uint8) ^ np.resize(np.frombuffer(mask, np.uint8), n))
        self.sock.sendall(header + mask + body.tobytes())

    def _receive(self) -> str:
        message = b""
        while True:
            b0, b1 = self._read(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._read(8))[0]
            payload = self._read(n)
            if b0 & 0x0F == 0x8:
                raise ConnectionError("DevTools closed the websocket")
            if b0 & 0x0F in (0x0, 0x1, 0x2):
                message += payload
                if b0 & 0x80:
                    return message.decode()

    def call(self, method: str, **params) -> dict:
        """Send one command and return its result, skipping events that arrive meanwhile."""
        self.next_id += 1
        self._send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self._receive())
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def js(self, expression: str):
        """Evaluate JavaScript in the page and return its (JSON-able) value."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page error: {result['exceptionDetails']}")
        return result["result"].get("value")

    def close(self) -> None:
        self.sock.close()


def open_page(page: Path, profile: Path) -> tuple[subprocess.Popen, DevTools]:
    """Start headless Chromium on ``page``; return the process and a client for the page."""
    proc = subprocess.Popen([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                             page.resolve().as_uri()],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    port_file = profile / "DevToolsActivePort"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if port_file.exists() and len(port_file.read_text().split()) >= 2:
            port = int(port_file.read_text().split()[0])
            targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list",
                                                        timeout=5).read())
            pages = [t for t in targets if t.get("type") == "page"]
            if pages:
                return proc, DevTools(pages[0]["webSocketDebuggerUrl"])
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("Chromium did not open its DevTools port")


STORY_ID = 7


@pytest.fixture(scope="module")
def viewer_case(shared_model: Path, valid_text: Path, tmp_path_factory) -> dict:
    """The shared model, a one-story store of real tokens, and the patterns of that story."""
    from extract.models import load_model
    from extract.store import write_store

    model = load_model(str(shared_model))
    text = valid_text.read_text().split("<|endoftext|>")[0].strip()
    ids = model.tokenizer.encode(text)[:48]
    n = len(ids)
    store = tmp_path_factory.mktemp("viewer") / "store.h5"
    write_store(store, {"input_id": np.array(ids), "story_id": np.full(n, STORY_ID),
                        "position": np.arange(n)},
                {"activity": np.zeros((n, model.cfg.n_layers, model.cfg.n_heads), np.float32)})
    from extract.store import open_store

    with open_store(store) as st:
        stored_ids = find_story(read_stories(st), STORY_ID).input_ids
    return {"model": model, "store": store, "ids": stored_ids,
            "patterns": attention_patterns(model, stored_ids),
            "tokens": token_strings(model.tokenizer, stored_ids)}


def test_patterns_come_from_the_model_in_story_order(viewer_case):
    patterns, ids = viewer_case["patterns"], viewer_case["ids"]
    cfg = viewer_case["model"].cfg
    n = len(ids)
    assert patterns.shape == (cfg.n_layers, cfg.n_heads, n, n)
    np.testing.assert_allclose(patterns.sum(-1), 1.0, atol=1e-4)
    assert np.all(np.triu(patterns, k=1) == 0)
    # Causal attention: the patterns of a prefix are the top-left block of the whole story's.
    prefix = attention_patterns(viewer_case["model"], ids[:12])
    np.testing.assert_allclose(prefix, patterns[:, :, :12, :12], atol=1e-5)
    assert not np.allclose(patterns[0, 0], patterns[3, 5])


def test_unknown_story_is_a_one_line_error(viewer_case, tmp_path: Path, capsys):
    assert run_main(main, ["viewer", "--store", str(viewer_case["store"]), "--model", "x",
                           "--story", "999", "--out", str(tmp_path / "p.html")]) == 2
    err = capsys.readouterr().err.strip()
    assert "story 999 is not in the store" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "p.html").exists()


def test_without_a_story_the_first_is_shown_and_the_choice_said(viewer_case, shared_model,
                                                                 tmp_path: Path, capsys):
    page = tmp_path / "p.html"
    assert run_main(main, ["viewer", "--store", str(viewer_case["store"]), "--model",
                           str(shared_model), "--max-tokens", "8", "--out", str(page)]) == 0
    err = capsys.readouterr().err.strip()
    assert err == (f"no --story given: showing story {STORY_ID} (the store's first story); "
                   f"the store holds 1 stories, ids [{STORY_ID}]; pick one with --story ID")
    assert f"story {STORY_ID}" in page.read_text()


def _hover(page: DevTools, index: int) -> None:
    x, y = page.js(f"""(() => {{
        const s = document.querySelectorAll('#text .tok')[{index}];
        s.scrollIntoView({{block: 'center'}});
        const r = s.getBoundingClientRect();
        return [r.x + r.width / 2, r.y + r.height / 2]; }})()""")
    page.call("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)


def _click(page: DevTools, selector: str) -> None:
    x, y = page.js(f"""(() => {{
        const s = document.querySelector({json.dumps(selector)});
        s.scrollIntoView({{block: 'center'}});
        const r = s.getBoundingClientRect();
        return [r.x + r.width / 2, r.y + r.height / 2]; }})()""")
    for kind in ("mousePressed", "mouseReleased"):
        page.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)


def _weights(page: DevTools) -> np.ndarray:
    shown = page.js("Array.from(document.querySelectorAll('#text .tok'))"
                    ".map(s => s.dataset.weight)")
    return np.array([float(w) for w in shown])


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install "
                    "chromium); the page cannot be driven without a browser")
def test_page_shows_the_stored_pattern_on_hover(viewer_case, tmp_path: Path):
    patterns, tokens = viewer_case["patterns"], viewer_case["tokens"]
    page_path = write_viewer(tmp_path / "page.html", patterns, tokens, "story 7", layer=2)
    html_text = page_path.read_text()
    assert "http://" not in html_text and "https://" not in html_text and "<link" not in html_text
    profile = tmp_path / "profile"
    profile.mkdir()
    proc, page = open_page(page_path, profile)
    try:
        deadline = time.monotonic() + 10
        while page.js("document.body && document.body.dataset.ready") != "1":
            assert time.monotonic() < deadline, "the page did not finish its script"
            time.sleep(0.05)
        assert page.js("document.querySelectorAll('#text .tok').length") == len(tokens)
        dest = 30
        _hover(page, dest)
        tol = 0.5 / SCALE + 1e-6
        shown = _weights(page)
        np.testing.assert_allclose(shown[:dest + 1], patterns[2, 0, dest, :dest + 1], atol=tol)
        assert np.all(shown[dest + 1:] == 0)
        # Every head's row lists its strongest sources for the hovered token.
        top = json.loads(page.js("document.querySelector('#heads tr[data-head=\"9\"]')"
                                 ".dataset.top"))
        assert top[0][0] == int(np.argmax(patterns[2, 9, dest, :dest + 1]))
        assert top[0][1] == pytest.approx(patterns[2, 9, dest].max(), abs=tol)
        # Choose head 9 by clicking its name, then layer 5 from the selector; hover again.
        _click(page, '#heads tr[data-head="9"] td.name')
        page.js("(() => { const s = document.getElementById('layer'); s.value = '5';"
                " s.dispatchEvent(new Event('change')); })()")
        dest = 17
        _hover(page, dest)
        np.testing.assert_allclose(_weights(page)[:dest + 1], patterns[5, 9, dest, :dest + 1],
                                   atol=tol)
        shot = base64.b64decode(page.call("Page.captureScreenshot", format="png")["data"])
        (tmp_path / "viewer.png").write_bytes(shot)
        assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 10_000
    finally:
        page.close()
        proc.terminate()
        proc.wait(timeout=10)
