"""Tiny helpers for the scripts that write notebook sources (tools/make_nb*.py)."""
from pathlib import Path

import nbformat as nbf

ROOT = Path(__file__).resolve().parents[1]


class Notebook:
    def __init__(self):
        self.cells = []

    def md(self, text: str):
        self.cells.append(nbf.v4.new_markdown_cell(text.strip()))

    def code(self, text: str, tags=(), caption: str | None = None):
        """A code cell; ``caption`` makes its displayed output a numbered-less figure with that
        caption in the rendered book (MyST-NB cell metadata ``mystnb.figure``)."""
        meta = {"tags": list(tags)}
        if caption:
            meta["mystnb"] = {"figure": {"caption": caption}}
        self.cells.append(nbf.v4.new_code_cell(text.strip(), metadata=meta))

    def write(self, path: str):
        nb = nbf.v4.new_notebook(cells=self.cells)
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nb.metadata["language_info"] = {"name": "python"}
        nbf.write(nb, path)


def book_source() -> tuple[str, str]:
    """``(repository URL, ref)`` from ``_config.yml`` (``repository: url, branch``): the one place
    that names them. The launch buttons open notebooks at that ref and the install cell below
    installs the package from it; the ref is the release tag ``v<version>``
    (``tests/test_book.py`` checks that it matches ``drdm.__version__`` and the stored notebooks)."""
    import yaml

    repo = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]
    return repo["url"].rstrip("/"), str(repo["branch"])


def colab_cell(url: str, ref: str) -> str:
    """The install cell: on Colab only, ``pip install "drdm @ git+URL@REF"``. pip keeps Colab's
    CUDA torch because drdm accepts any torch >= 2.1 (and the other dependencies that Colab has)."""
    return f"""
# On Colab: install the package at the book's release (keeps Colab's own torch). Elsewhere this does nothing.
import importlib.util, subprocess, sys
if "google.colab" in sys.modules and importlib.util.find_spec("drdm") is None:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "drdm @ git+{url}@{ref}"], check=True)
"""


COLAB_CELL = colab_cell(*book_source())
