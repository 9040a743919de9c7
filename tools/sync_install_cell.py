"""Rewrite the install cell of stored notebooks from ``_config.yml`` (via ``nbtools.COLAB_CELL``).

    python tools/sync_install_cell.py                      # every notebooks/NN_*.ipynb
    python tools/sync_install_cell.py notebooks/02_training.ipynb ...

Only the install cell's source changes (the code cell tagged ``remove-cell`` that mentions
``google.colab``); the other cells and every stored output stay as they are, so nbval's
checked outputs need no re-run. ``tools/make_nb*.py`` write the same cell when they
regenerate a notebook.
"""
import sys
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).parent))
from nbtools import COLAB_CELL, ROOT  # noqa: E402


def is_install_cell(cell) -> bool:
    return (cell.cell_type == "code" and "remove-cell" in cell.metadata.get("tags", [])
            and "google.colab" in cell.source)


def sync(path: Path) -> bool:
    """Update ``path`` in place; True when it changed. ``SystemExit`` without an install cell."""
    nb = nbformat.read(path, as_version=4)
    cells = [c for c in nb.cells if is_install_cell(c)]
    if len(cells) != 1:
        raise SystemExit(f"error: {path} has {len(cells)} install cells (tagged remove-cell, google.colab)")
    want = COLAB_CELL.strip()
    if cells[0].source == want:
        return False
    cells[0].source = want
    nbformat.write(nb, path)
    return True


def main(argv=None) -> int:
    paths = [Path(p) for p in (argv or [])] or sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    for p in paths:
        print(("updated " if sync(p) else "unchanged ") + str(p))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
