"""A real headless Chromium (Debian's ``chromium`` package) driven over the DevTools protocol (aiohttp's
WebSocket client): load a page, record every request it makes and every console message or uncaught error,
read the rendered text, take a full-page screenshot. Used by tests/test_report_render.py and
scripts/report-screenshots.py."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-default-apps", "--disable-sync",
         "--remote-debugging-port=0", "--remote-allow-origins=*")


def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


@dataclass
class Rendered:
    text: str  # document.body.innerText: what a person sees
    requests: list[str] = field(default_factory=list)  # every URL the page asked for (the page itself included)
    console: list[str] = field(default_factory=list)  # console errors/warnings, uncaught exceptions, log errors
    screenshot: bytes = b""


class Browser:
    def __init__(self, ws_url: str, session: aiohttp.ClientSession) -> None:
        self._ws_url = ws_url
        self._session = session

    async def render(self, url: str, *, width: int = 1200, height: int = 900, mobile: bool = False,
                     screenshot: bool = False, scripts: bool = False, wait: float = 60,
                     max_height: int = 0) -> Rendered:
        """Open ``url`` in a new tab (page scripts disabled unless ``scripts``) and wait for its load event."""
        port = self._ws_url.split("/")[2]
        async with self._session.put(f"http://{port}/json/new?about:blank") as resp:
            target = await resp.json(content_type=None)
        out = Rendered("")
        try:
            async with self._session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                ids = iter(range(1, 1_000_000))
                pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
                loaded = asyncio.get_running_loop().create_future()

                async def reader() -> None:
                    async for msg in ws:
                        data = json.loads(msg.data)
                        if "id" in data and data["id"] in pending:
                            pending.pop(data["id"]).set_result(data)
                            continue
                        method, params = data.get("method"), data.get("params", {})
                        if method == "Network.requestWillBeSent":
                            out.requests.append(params["request"]["url"])
                        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "warning",
                                                                                               "assert"):
                            out.console.append(" ".join(str(a.get("value", a.get("description", "")))
                                                        for a in params.get("args", [])))
                        elif method == "Runtime.exceptionThrown":
                            out.console.append(str(params.get("exceptionDetails", {}).get("text")))
                        elif method == "Log.entryAdded" and params["entry"].get("level") in ("error", "warning"):
                            out.console.append(f"{params['entry'].get('source')}: {params['entry'].get('text')}")
                        elif method == "Page.loadEventFired" and not loaded.done():
                            loaded.set_result(None)

                async def call(method: str, **params: Any) -> dict[str, Any]:
                    n = next(ids)
                    fut = asyncio.get_running_loop().create_future()
                    pending[n] = fut
                    await ws.send_str(json.dumps({"id": n, "method": method, "params": params}))
                    data = await asyncio.wait_for(fut, wait)
                    if "error" in data:
                        raise RuntimeError(f"{method}: {data['error']}")
                    return dict(data.get("result", {}))

                task = asyncio.create_task(reader())
                try:
                    for domain in ("Network", "Runtime", "Log", "Page"):
                        await call(f"{domain}.enable")
                    await call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                               deviceScaleFactor=2 if mobile else 1, mobile=mobile)
                    if not scripts:
                        await call("Emulation.setScriptExecutionDisabled", value=True)
                    await call("Page.navigate", url=url)
                    await asyncio.wait_for(loaded, wait)
                    doc = await call("DOM.getDocument", depth=-1)
                    html = await call("DOM.getOuterHTML", nodeId=doc["root"]["nodeId"])
                    out.text = _visible_text(html["outerHTML"])
                    if screenshot:
                        metrics = await call("Page.getLayoutMetrics")
                        size = metrics.get("cssContentSize") or metrics["contentSize"]
                        tall = min(size["height"], max_height) if max_height else size["height"]
                        shot = await call("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                                          clip={"x": 0, "y": 0, "width": width, "height": tall, "scale": 1})
                        out.screenshot = base64.b64decode(shot["data"])
                finally:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        finally:
            async with self._session.get(f"http://{port}/json/close/{target['id']}") as resp:
                await resp.read()
        return out


def _visible_text(markup: str) -> str:
    """The text a person sees in the rendered DOM: tags, <style> and inert <script> data left out."""
    import html

    markup = re.sub(r"<(style|script)\b.*?</\1>", " ", markup, flags=re.S | re.I)
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", markup))).strip()


@contextlib.asynccontextmanager
async def browser(binary: str | None = None) -> AsyncIterator[Browser]:
    """A headless Chromium with a throwaway profile, stopped (and its profile removed) on exit."""
    binary = binary or chromium_binary()
    if binary is None:
        raise RuntimeError("no chromium on PATH (apt-get install chromium; scripts/test.sh installs it)")
    profile = tempfile.mkdtemp(prefix="drwatch-chromium-")
    proc = await asyncio.create_subprocess_exec(binary, *FLAGS, f"--user-data-dir={profile}", "about:blank",
                                                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
                                                start_new_session=True)
    drain: asyncio.Task[None] | None = None
    try:
        ws_url = await asyncio.wait_for(_devtools_url(proc), 60)
        drain = asyncio.create_task(_drain(proc))  # Chromium must never block on a full stderr pipe
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
            yield Browser(ws_url, session)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        if drain is not None:
            drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drain
        shutil.rmtree(profile, ignore_errors=True)


async def _devtools_url(proc: asyncio.subprocess.Process) -> str:
    assert proc.stderr is not None
    while line := (await proc.stderr.readline()).decode(errors="replace"):
        found = re.search(r"DevTools listening on (ws://\S+)", line)
        if found:
            return found.group(1)
    raise RuntimeError(f"chromium exited ({await proc.wait()}) before DevTools listened")


async def _drain(proc: asyncio.subprocess.Process) -> None:
    assert proc.stderr is not None
    while await proc.stderr.read(65536):
        pass


def file_url(path: Path) -> str:
    return path.resolve().as_uri()
