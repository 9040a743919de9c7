"""The book's own Sphinx extension (``_config.yml``: ``sphinx: local_extensions``).

* Offline maths: when ``tools/get_mathjax.sh`` (``make mathjax``) has put MathJax into
  ``book/_static/mathjax``, the pages load it from the book's ``_static`` folder; without
  it they keep Sphinx's default, MathJax from its CDN, and the build says so in its log.
* One copy of each page script: sphinx-thebe's inline configuration (jupyter-book 1.x)
  reaches every page twice, once with file name ``None`` and once with ``""``, so Sphinx
  does not see the two as equal, and the second ``const THEBE_JS_URL = ...`` throws
  "'THEBE_JS_URL' has already been declared" in every page's console. Identical scripts
  (same file or inline body, same attributes) are kept once, at their first position.
* Launch and download buttons open files that the repository holds. A chapter's page is built
  from ``book/_executed/NN_x.ipynb`` (papermill's output, not committed), so sphinx-book-theme's
  Colab and Binder links (``.../blob/<branch>/book/_executed/NN_x.ipynb``, ``?urlpath=tree/...``)
  and its download link (``_sources/book/_executed/NN_x.ipynb``) would name a file that no clone
  has. After the theme has made them, every such link is pointed at ``notebooks/NN_x.ipynb``, the
  committed source at the ref in ``_config.yml``, and the download serves a copy of that file
  (``_sources/notebooks/NN_x.ipynb``): the ci-profile notebook with its install cell.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from sphinx.util import logging

logger = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parents[1] / "_static"      # book/_static
MATHJAX = STATIC / "mathjax" / "tex-mml-chtml.js"


def use_local_mathjax(app, config):
    if MATHJAX.is_file():
        config.html_static_path = [*config.html_static_path, str(STATIC)]
        config.mathjax_path = MATHJAX.relative_to(STATIC).as_posix()     # relative: under _static/
        logger.info("drdm_book: MathJax served from the book (%s)", MATHJAX.parent)
    else:
        logger.info("drdm_book: %s absent (run `make mathjax`); pages load MathJax from %s",
                    MATHJAX.parent, config.mathjax_path)


def drop_duplicate_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not isinstance(scripts, list):
        return
    seen, kept = set(), []
    for js in sorted(scripts, key=lambda s: getattr(s, "priority", 500)):
        # an inline script comes once with filename None and once with "" (registry and builder)
        key = (str(js),) if not hasattr(js, "attributes") else \
            (js.filename or "", tuple(sorted(js.attributes.items())))
        if key not in seen:
            seen.add(key)
            kept.append(js)
    context["script_files"] = kept


EXECUTED = "book/_executed/"     # pages built from papermill's outputs
SOURCES = "notebooks/"           # the committed notebooks they were run from


def _links(buttons):
    for b in buttons:
        if b.get("type") == "group":
            yield from _links(b.get("buttons", []))
        elif b.get("type") == "link":
            yield b


def point_buttons_at_sources(app, pagename, templatename, context, doctree):
    """Colab, Binder and download links of an executed chapter -> ``notebooks/<name>.ipynb``."""
    if not pagename.startswith(EXECUTED):
        return
    name = pagename[len(EXECUTED):] + ".ipynb"
    source = Path(app.srcdir) / SOURCES / name
    if not source.is_file():
        logger.warning("drdm_book: %s has no committed source %s; its launch links would not resolve",
                       pagename, source)
        return
    old, new = EXECUTED + name, SOURCES + name
    for button in _links(context.get("header_buttons", [])):
        button["url"] = button["url"].replace(old, new)
    target = Path(app.outdir) / "_sources" / SOURCES / name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)


def setup(app):
    app.connect("config-inited", use_local_mathjax)
    # late, after the theme and the other extensions have added their scripts
    app.connect("html-page-context", drop_duplicate_scripts, priority=900)
    # after sphinx-book-theme's header and launch buttons (default priority 500)
    app.connect("html-page-context", point_buttons_at_sources, priority=800)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
