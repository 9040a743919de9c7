"""The book builds with -W from the stored ci-profile notebooks, and renders in a real browser."""
import functools
import html.parser
import http.server
import json
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
LOCAL_MATHJAX = ROOT / "book" / "_static" / "mathjax" / "tex-mml-chtml.js"    # `make mathjax`
# the separator row of a Markdown pipe table (as text, smartquotes turn --- into a dash):
# left as text, the table was not rendered
PIPE_ROW = re.compile(r"^\s*\|?\s*:?(?:-{3,}|[\u2013\u2014]+):?\s*\|", re.M)
INLINE_MATH = re.compile(r"\$[^$\s][^$\n]*\$|\$\$")
TEX_LEFT = re.compile(r"\\\(|\\\[|\$\$|\\begin\{")


class _VisibleText(html.parser.HTMLParser):
    """The text a reader sees as prose: without code, scripts, styles and typeset maths."""
    SKIP = {"pre", "code", "script", "style", "textarea", "template", "noscript", "mjx-container"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.depth, self.parts = 0, []

    def handle_starttag(self, tag, attrs):
        if tag in self.SKIP:
            self.depth += 1

    def handle_endtag(self, tag):
        if tag in self.SKIP and self.depth:
            self.depth -= 1

    def handle_data(self, data):
        if not self.depth:
            self.parts.append(data)


def visible_text(dom: str) -> str:
    parser = _VisibleText()
    parser.feed(dom)
    return "".join(parser.parts)


def expected_content(page: str) -> dict:
    """What the page's source says it must show: figures made by cells, displayed
    Markdown tables, and whether its prose has maths."""
    stem = Path(page).stem
    if "_executed" not in page:
        text = (ROOT / "book" / f"{stem}.md").read_text()
        return {"figures": 0, "tables": 0, "math": bool(INLINE_MATH.search(text) or "{math}" in text)}
    nb = json.loads((ROOT / "notebooks" / f"{stem}.ipynb").read_text())
    figures = tables = 0
    math = False
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown":
            math = math or bool(INLINE_MATH.search("".join(cell["source"])))
            continue
        if {"remove-cell", "remove-output"} & set(cell["metadata"].get("tags", [])):
            continue
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            figures += "image/png" in data
            tables += bool(PIPE_ROW.search("".join(data.get("text/markdown", ""))))
    return {"figures": figures, "tables": tables, "math": math}


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
    # the committed sources, which the launch and download buttons point at (excluded from the build)
    shutil.copytree(ROOT / "notebooks", root / "notebooks")
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


class _Hrefs(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.hrefs = []

    def handle_starttag(self, tag, attrs):
        href = dict(attrs).get("href")
        if tag == "a" and href:
            self.hrefs.append(href)


def book_repository() -> tuple[str, str]:
    """``(org/repo, ref)`` from ``_config.yml``'s ``repository`` (url, branch)."""
    import yaml
    repo = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]
    url = repo["url"].rstrip("/")
    assert url.startswith("https://github.com/"), url
    return url[len("https://github.com/"):], str(repo["branch"])


def test_launch_and_download_links_name_committed_files(built_book):
    """Every Colab, Binder and download link names a file that `git ls-files` lists (at the
    ref in _config.yml), and a chapter's links name its source notebook, notebooks/NN_x.ipynb."""
    from urllib.parse import unquote, urljoin, urlsplit

    tracked = set(subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                                 check=True).stdout.splitlines())
    org_repo, ref = book_repository()
    colab = re.compile(rf"https://colab\.research\.google\.com/github/{re.escape(org_repo)}/blob/"
                       r"(?P<ref>[^/]+)/(?P<path>[^?#]+)")
    binder = re.compile(rf"https://mybinder\.org/v2/gh/{re.escape(org_repo)}/(?P<ref>[^?]+)"
                        r"\?urlpath=(?:lab/)?tree/(?P<path>[^&#]+)")
    site = "http://book.invalid/"
    kinds = {}
    for page in sorted(built_book.rglob("*.html")):
        rel = page.relative_to(built_book).as_posix()
        parser = _Hrefs()
        parser.feed(page.read_text())
        for href in parser.hrefs:
            if "colab.research.google.com" in href or "mybinder.org" in href:
                kind = "colab" if "colab" in href else "binder"
                m = (colab if kind == "colab" else binder).fullmatch(href)
                assert m, f"{rel}: unexpected {kind} link {href}"
                assert m["ref"] == ref, f"{rel}: {href} opens ref {m['ref']}, the book's is {ref}"
                path = unquote(m["path"])
            else:
                url = urljoin(site + rel, href)
                if not url.startswith(site + "_sources/"):
                    continue
                kind, path = "download", unquote(urlsplit(url).path)[len("/_sources/"):]
                served = built_book / "_sources" / path
                assert served.is_file(), f"{rel}: download link {href} has no file in the build"
                # the same bytes as the repository's file (as the fixture copied it)
                source = built_book.parents[1] / path
                assert served.read_bytes() == source.read_bytes(), f"{rel}: {href} is not {path}"
            assert path in tracked, f"{rel}: {kind} link {href} names {path}, which git does not track"
            kinds.setdefault(rel, {}).setdefault(kind, set()).add(path)
    for nb in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        got = kinds.get(f"book/_executed/{nb.stem}.html", {})
        for kind in ("colab", "binder", "download"):
            assert got.get(kind) == {f"notebooks/{nb.name}"}, (nb.stem, kind, got)


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
    pages = ["book/intro.html", "book/method.html"] + [
        f"book/_executed/{nb.stem}.html" for nb in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))]
    # the pages' sources still hold what the checks below look for
    assert all(expected_content(f"book/_executed/{s}.html")["tables"] for s in ("04_segmentation", "07_benchmarks"))
    assert all(expected_content(p)["math"] for p in ("book/method.html", "book/_executed/01_noise_statistics.html"))
    try:
        for page in pages:
            url = f"http://127.0.0.1:{srv.server_address[1]}/{page}"
            r = subprocess.run([CHROMIUM, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
            assert r.returncode == 0, r.stderr[-2000:]
            # no console error at all (book/_ext/drdm_book.py drops sphinx-thebe's second script)
            errors = [ln for ln in r.stderr.splitlines() if "CONSOLE" in ln and re.search(r"Uncaught|Error", ln)]
            assert not errors, (page, errors[:3])
            dom = r.stdout
            assert "<h1" in dom, page
            want, text = expected_content(page), visible_text(dom)
            # figures a cell made (Sphinx copies them to _images/), not the theme's own icons
            figures = re.findall(r'<img[^>]+src="[^"]*_images/[^"]+\.png"', dom)
            assert len(figures) >= want["figures"], f"{page}: {len(figures)} cell figures, {want['figures']} stored"
            # displayed results tables are HTML tables, never pipe text
            assert dom.count("<table") >= want["tables"], f"{page}: fewer <table> than displayed tables"
            assert not PIPE_ROW.search(text), f"{page}: a Markdown table left as text: {PIPE_ROW.search(text)[0]!r}"
            # maths typeset by MathJax (served by the book itself when `make mathjax` ran), no TeX left
            if want["math"]:
                assert "<mjx-container" in dom, f"{page}: maths not typeset"
                if LOCAL_MATHJAX.is_file():
                    assert re.search(r'<script[^>]+src="[^"]*_static/mathjax/tex-mml-chtml\.js', dom), page
            left = TEX_LEFT.search(text)
            assert not left, f"{page}: raw TeX in the text: {text[max(0, left.start() - 60):left.end() + 60]!r}"
            name = page.replace("/", "_").replace(".html", ".png")
            subprocess.run([CHROMIUM, *flags, f"--screenshot={shots / name}", url], capture_output=True,
                           timeout=120)
            assert (shots / name).stat().st_size > 10_000, name
    finally:
        srv.shutdown()


def test_install_cell_installs_the_books_ref():
    """One source for the repository and the ref: _config.yml. Its ref is the release tag
    v<version>; every stored notebook's install cell (tagged remove-cell) installs exactly
    "drdm @ git+<url>@<ref>" and nothing else, so Colab keeps its own torch (drdm accepts any
    torch >= 2.1). tools/sync_install_cell.py rewrites the cells from _config.yml."""
    import drdm

    org_repo, ref = book_repository()
    version = re.search(r'(?m)^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text())[1]
    assert version == drdm.__version__
    assert ref == f"v{version}", f"_config.yml repository.branch {ref!r} is not the release tag v{version}"
    torch_req = re.search(r'"torch([^"]*)"', (ROOT / "pyproject.toml").read_text())[1]
    assert torch_req.startswith(">=") and "<" not in torch_req, f"torch{torch_req}: Colab's torch must satisfy it"
    want = f'"drdm @ git+https://github.com/{org_repo}@{ref}"'
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        cells = [c for c in json.loads(path.read_text())["cells"]
                 if c["cell_type"] == "code" and "google.colab" in "".join(c["source"])]
        assert len(cells) == 1, f"{path.name}: {len(cells)} install cells"
        src = "".join(cells[0]["source"])
        assert "remove-cell" in cells[0]["metadata"].get("tags", []), path.name
        installs = re.findall(r'"[^"]*git\+[^"]*"', src)
        assert installs == [want], f"{path.name} installs {installs}, not {want}: run python tools/sync_install_cell.py"
        assert "torch" not in src.replace("Colab's own torch", ""), f"{path.name}: the install cell touches torch"
