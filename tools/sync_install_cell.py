"""Rewrite the install cell of the notebooks from ``_config.yml``, in both files of each pair.

    python tools/sync_install_cell.py                      # every notebooks/NN_*.ipynb and its .md
    python tools/sync_install_cell.py notebooks/02_training.ipynb ...

The install cell is the code cell tagged ``remove-cell`` that mentions ``google.colab``. On
Colab only, it runs ``pip install "drdm @ git+URL@REF"`` with the repository URL and the ref
(the release tag ``v<version>``) of ``_config.yml``'s ``repository`` section, the one place that
names them; pip keeps Colab's CUDA torch because drdm accepts any torch >= 2.1. Elsewhere the cell
does nothing, so it runs (and is executed in the stored outputs) like every other cell.

Only that cell's source changes: in the stored ``.ipynb`` (every output kept, so nbval's
checked outputs need no re-run) and in its jupytext-paired MyST text file ``notebooks/NN_*.md``
(the rest of the text file is left byte for byte). ``tests/test_book.py`` checks the cells.
"""
import sys
from pathlib import Path

import jupytext
import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]


def book_source(root: Path = ROOT) -> tuple[str, str]:
    """``(repository URL, ref)`` from ``_config.yml`` (``repository: url, branch``)."""
    repo = yaml.safe_load((root / "_config.yml").read_text())["repository"]
    return repo["url"].rstrip("/"), str(repo["branch"])


def install_cell(url: str, ref: str) -> str:
    """The install cell's source: on Colab only, ``pip install "drdm @ git+URL@REF"``."""
    return f"""\
# On Colab: install the package at the book's release (keeps Colab's own torch). Elsewhere this does nothing.
import importlib.util, subprocess, sys
if "google.colab" in sys.modules and importlib.util.find_spec("drdm") is None:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "drdm @ git+{url}@{ref}"], check=True)"""


def is_install_cell(cell) -> bool:
    return (cell.cell_type == "code" and "remove-cell" in cell.metadata.get("tags", [])
            and "google.colab" in cell.source)


def _the_install_cell(nb, path: Path):
    cells = [c for c in nb.cells if is_install_cell(c)]
    if len(cells) != 1:
        raise SystemExit(f"error: {path} has {len(cells)} install cells (tagged remove-cell, google.colab)")
    return cells[0]


def paired_text(path: Path) -> Path:
    """The MyST text file paired with ``path`` (``notebooks/NN_x.ipynb`` -> ``notebooks/NN_x.md``)."""
    return path.with_suffix(".md")


def sync(path: Path, want: str | None = None) -> bool:
    """Update ``path`` (an ``.ipynb``) and its paired ``.md`` in place; True when either changed.
    ``SystemExit`` when a file has no install cell or the text file is missing."""
    want = install_cell(*book_source()) if want is None else want
    changed = False
    nb = nbformat.read(path, as_version=4)
    cell = _the_install_cell(nb, path)
    if cell.source != want:
        cell.source = want
        nbformat.write(nb, path)
        changed = True
    text_path = paired_text(path)
    if not text_path.is_file():
        raise SystemExit(f"error: {path} has no paired text file {text_path} (jupytext --sync {path})")
    text = text_path.read_text()
    old = _the_install_cell(jupytext.reads(text, fmt="md:myst"), text_path).source
    if old != want:
        if text.count(old) != 1:
            raise SystemExit(f"error: cannot locate the install cell's source in {text_path}")
        text_path.write_text(text.replace(old, want))
        changed = True
    return changed


def main(argv=None) -> int:
    paths = [Path(p) for p in (argv or [])] or sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    want = install_cell(*book_source())
    for p in paths:
        print(("updated " if sync(p, want) else "unchanged ") + str(p))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
