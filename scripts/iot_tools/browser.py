"""Headless Chromium driven over the DevTools protocol, for pages that need real browsing: the
sign-in test navigates, fills Keycloak's login form and reads the page's state. The browser is
the one `make test` installs (scripts/bootstrap-chromium.sh) or $CHROMIUM; the protocol is spoken
with aiohttp's WebSocket client (no extra package)."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp


def chromium() -> str:
    binary = os.environ.get("CHROMIUM") or shutil.which("chromium")
    if not binary:
        raise FileNotFoundError(
            "chromium missing: run scripts/bootstrap-chromium.sh (make test does)")
    return binary


class Browser:
    """One headless Chromium with one page. Host names resolve to nothing: pages under test
    are reached by loopback IP, and nothing else is fetched."""

    def __init__(self, profile: Path) -> None:
        self._profile = profile
        self._process: subprocess.Popen | None = None
        self._loop = asyncio.new_event_loop()
        self._session: aiohttp.ClientSession | None = None
        self._socket: aiohttp.ClientWebSocketResponse | None = None
        self._ids = itertools.count(1)

    def __enter__(self) -> Browser:
        self._profile.mkdir(parents=True, exist_ok=True)
        self._process = subprocess.Popen(
            [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", "--disable-extensions", "--disable-background-networking",
             "--disable-component-update", "--disable-sync",
             "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "--no-proxy-server",
             "--remote-debugging-port=0",
             f"--user-data-dir={self._profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self._loop.run_until_complete(self._connect())
        return self

    def __exit__(self, _type: type[BaseException] | None, _error: BaseException | None,
                 _traceback: TracebackType | None) -> None:
        self.close()

    async def _connect(self) -> None:
        port_file = self._profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not port_file.exists() or not port_file.read_text().strip():
            if time.monotonic() > deadline:
                raise TimeoutError("chromium did not open its DevTools port")
            await asyncio.sleep(0.1)
        port = port_file.read_text().split()[0]
        self._session = aiohttp.ClientSession()
        async with self._session.get(f"http://127.0.0.1:{port}/json/list") as answer:
            targets = await answer.json()
        (page,) = [target for target in targets if target["type"] == "page"]
        self._socket = await self._session.ws_connect(page["webSocketDebuggerUrl"],
                                                      max_msg_size=0)

    async def _call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        assert self._socket is not None
        call_id = next(self._ids)
        await self._socket.send_str(json.dumps({"id": call_id, "method": method,
                                                "params": params}))
        while True:
            message = json.loads((await self._socket.receive(timeout=60)).data)
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def navigate(self, url: str) -> None:
        self._loop.run_until_complete(self._call("Page.navigate", {"url": url}))

    def evaluate(self, expression: str) -> Any:
        """The expression's value (JSON-able), evaluated in the page as it is now."""
        result = self._loop.run_until_complete(self._call(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                 "awaitPromise": True}))
        if "exceptionDetails" in result:
            return None  # e.g. the page is between two documents
        return result["result"].get("value")

    def wait_for(self, condition: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.evaluate(condition) is True:
                    return True
            except RuntimeError:
                pass  # the execution context went away with a navigation
            time.sleep(0.2)
        return False

    def close(self) -> None:
        if self._session is not None:
            self._loop.run_until_complete(self._session.close())
        if self._process is not None and self._process.poll() is None:
            # Its own process group: the renderer and GPU helpers go with it.
            os.killpg(self._process.pid, signal.SIGTERM)
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait(10)
        self._loop.close()
