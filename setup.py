"""Build hook: a built ``drdm`` carries a copy of the repository's small committed ``results/``.

Everything else is configured in ``pyproject.toml``. The book's chapters read recorded runs
(the shipped model's training log, the benchmarks, the M&Ms experiments) through
``drdm.results_dir()``; on Colab there is no checkout, only ``pip install "drdm @ git+URL@REF"``,
so a regular (non-editable) build copies ``results/**/{*.json,*.csv,*.md}`` to
``drdm/_results/``. An editable install needs no copy: ``results_dir()`` finds the checkout.
"""
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
SUFFIXES = {".json", ".csv", ".md"}


class build_py_with_results(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False) or not RESULTS.is_dir():
            return
        target = Path(self.build_lib) / "drdm" / "_results"
        for src in sorted(RESULTS.rglob("*")):
            if src.is_file() and src.suffix in SUFFIXES and not src.name.startswith(("partial_", ".")):
                dst = target / src.relative_to(RESULTS)
                self.mkpath(str(dst.parent))
                self.copy_file(str(src), str(dst))


setup(cmdclass={"build_py": build_py_with_results})
