"""``drdm`` command line: ``drdm train | augment | synth | table1 | experiment | fewshot``.

One module per command (:mod:`.train`, :mod:`.augment`, :mod:`.synth`, :mod:`.table1`,
:mod:`.experiment`, :mod:`.fewshot`), what they share in :mod:`.common`, and the parser and the exit
codes in :mod:`.main`. Geometry between a reader's grid and the network's:
:mod:`drdm.grid`; output folders, manifests and DDF files: :mod:`drdm.outputs`.
"""
from .main import build_parser, main

__all__ = ["build_parser", "main"]
