"""Tiny helpers for the scripts that write notebook sources (tools/make_nb*.py)."""
import nbformat as nbf


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


COLAB_CELL = """
# On Colab: install the package (keeps Colab's own torch). Elsewhere this does nothing.
import importlib.util, subprocess, sys
if "google.colab" in sys.modules and importlib.util.find_spec("drdm") is None:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "git+https://github.com/drdm-book/drdm-book"], check=True)
"""
