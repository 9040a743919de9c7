"""The book builds with -W from the stored ci-profile notebooks, and renders in a real browser."""
import functools
import http.server
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.fixture(scope="module")
def built_book(tmp_path_factory):
    """Copy the book sources and the ci-profile notebooks (which hold their outputs) and build."""
    root = tmp_path_factory.mktemp("book")
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy(ROOT / name, root / name)
    shutil.copytree(ROOT / "book", root / "book", ignore=shutil.ignore_patterns("_executed"))
    (root / "book" / "_executed").mkdir()
    for nb in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        shutil.copy(nb, root / "book" / "_executed" / nb.name)
    jb = Path(sys.executable).with_name("jupyter-book")
    r = subprocess.run([str(jb), "build", str(root), "-W", "--keep-going"], capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    return root / "_build" / "html"


def test_book_builds_without_warnings_and_has_every_chapter(built_book):
    pages = sorted(p.relative_to(built_book).as_posix() for p in built_book.rglob("*.html"))
    for nb in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        assert f"book/_executed/{nb.stem}.html" in pages
    assert "book/reproducibility.html" in pages and "book/references.html" in pages


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def _serve(folder):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium found (CI installs Debian's chromium; "
                    "elsewhere: apt-get install chromium)")
def test_pages_render_in_headless_chromium(built_book, tmp_path):
    srv = _serve(built_book)
    shots = ROOT / "_build" / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--disable-default-apps", "--mute-audio",
             f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
             "--virtual-time-budget=4000", "--window-size=1280,1600"]
    pages = ["book/intro.html"] + [f"book/_executed/{nb.stem}.html"
                                   for nb in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))]
    try:
        for page in pages:
            url = f"http://127.0.0.1:{srv.server_address[1]}/{page}"
            r = subprocess.run([CHROMIUM, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
            assert r.returncode == 0, r.stderr[-2000:]
            # sphinx-thebe (pulled in by jupyter-book 1.0.4) registers its config script twice on
            # every page; the second copy throws a redeclaration error. Thebe is not used here,
            # so that one known upstream error is tolerated; any other JS error fails the test.
            errors = [ln for ln in r.stderr.splitlines() if "CONSOLE" in ln and re.search(r"Uncaught|Error", ln)
                      and "favicon" not in ln and "'THEBE_JS_URL' has already been declared" not in ln]
            assert not errors, (page, errors[:3])
            dom = r.stdout
            assert "<h1" in dom, page
            if "_executed" in page:
                assert re.search(r'<img[^>]+src="[^"]*\.png"', dom), f"{page}: no rendered figure"
            name = page.replace("/", "_").replace(".html", ".png")
            subprocess.run([CHROMIUM, *flags, f"--screenshot={shots / name}", url], capture_output=True,
                           timeout=120)
            assert (shots / name).stat().st_size > 10_000, name
    finally:
        srv.shutdown()
