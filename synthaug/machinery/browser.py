"""The built report as its reader sees it: opened in headless Chromium.

`check_page` loads a page of the book over a local HTTP server, fetches and decodes every
image it shows, and returns what was on the page; `screenshot` saves a PNG of a page (the
README's pictures). Both need a Chromium binary (Debian's `chromium` package); without
one, `find_chromium` returns None and callers say so.
"""

from __future__ import annotations

import contextlib
import functools
import html
import http.server
import json
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

CHECK_PAGE = "_synthaug_check.html"
# Loads the page in a same-origin frame; its load event fires once every image has loaded
# or failed, and a failed one has no natural width (lazy loading is turned off first).
CHECK_SCRIPT = """<!doctype html><html><body><iframe id="page" src="%s" width="1200"
height="900"></iframe><pre id="result"></pre><script>
const frame = document.getElementById("page");
frame.addEventListener("load", () => {
  const doc = frame.contentDocument;
  const images = [...doc.querySelectorAll("img")].map((img) => ({
    src: img.getAttribute("src"), ok: img.complete && img.naturalWidth > 0,
    lazy: img.loading === "lazy"}));
  const tables = [...doc.querySelectorAll("table")].map((t) => t.innerText);
  document.getElementById("result").textContent = JSON.stringify(
    {title: doc.title, text: doc.body.innerText, images: images, tables: tables});
});
</script></body></html>"""


class BrowserError(RuntimeError):
    """Chromium did not render the page."""


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if path := shutil.which(name):
            return path
    return None


@contextlib.contextmanager
def serve(folder: Path) -> Iterator[str]:
    """`folder` over HTTP on a free local port, for as long as the context lasts."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *_args: object) -> None:
        pass


def _chromium(args: list[str], timeout: float) -> str:
    binary = find_chromium()
    if binary is None:
        raise BrowserError("no Chromium found; install it (Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run(
            [
                binary,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    if result.returncode != 0:
        raise BrowserError(f"chromium failed ({result.returncode}): {result.stderr[-2000:]}")
    return result.stdout


def check_page(html_dir: Path, page: str, timeout: float = 120) -> dict:
    """What a reader gets on `page` of the built book: its title, text, tables, and each
    image with whether it loaded and decoded."""
    (html_dir / CHECK_PAGE).write_text(CHECK_SCRIPT % page)
    try:
        with serve(html_dir) as url:
            dom = _chromium(
                ["--virtual-time-budget=30000", "--dump-dom", f"{url}/{CHECK_PAGE}"], timeout
            )
    finally:
        (html_dir / CHECK_PAGE).unlink(missing_ok=True)
    start = dom.find('<pre id="result">') + len('<pre id="result">')
    payload = dom[start : dom.find("</pre>", start)]
    if not payload.strip():
        raise BrowserError(f"{page} did not finish loading in the browser")

    return json.loads(html.unescape(payload))


def screenshot(html_dir: Path, page: str, out: Path, width: int = 1280, height: int = 1800) -> Path:
    """A PNG of `page` as a `width` x `height` browser window shows it from the top."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with serve(html_dir) as url:
        _chromium(
            [
                f"--window-size={width},{height}",
                "--hide-scrollbars",
                "--virtual-time-budget=15000",
                f"--screenshot={out.resolve()}",
                f"{url}/{page}",
            ],
            timeout=120,
        )
    return out
