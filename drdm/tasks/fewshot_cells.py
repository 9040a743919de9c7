"""The few-shot run folder's cell records: set aside a cell trained to another budget, and write back
the cells and pilots a saved record carries into a lost folder (:func:`restore_cells`)."""
from __future__ import annotations

import json
from pathlib import Path

from ..files import atomic_write
from ._common import log
from .fewshot_report import set_size

__all__ = ["supersede", "restore_cells"]


def supersede(path: Path) -> None:
    """Move a cell (record and weights) trained to another budget into ``superseded/``."""
    dest = path.parent / "superseded"
    dest.mkdir(exist_ok=True)
    for p in [p for p in (path.with_suffix(".pt"), path) if p.is_file()]:
        p.replace(dest / p.name)


def restore_cells(record: dict, cell_dir: str | Path, key: str) -> list[str]:
    """Write back into ``cell_dir`` the cell and pilot records a saved record carries and the folder lacks.

    ``record`` is a saved few-shot record (``results/<protocol>/segmentation_<data>.json``, as read, or
    :func:`~drdm.tasks.fewshot_report.summarise`'s result) of the run key ``key``: its ``cells`` (each
    cell's record but its weights) and its ``pilot`` curves, with their wall times (a pilot's is its share
    of the pilots' total). Restored records are marked ``"restored": true``: they have no weights, and
    :func:`~drdm.tasks.fewshot.score_external` passes them by (weights left without their record, a run
    killed between the two writes, belong to no record and are removed). A cell trained to another budget
    than the record's is not restored (it would only be set aside). A record already in the folder is
    kept. Returns the names written.

    Raises:
        ValueError: the record is of another run key (another protocol or data), or carries no run key.
    """
    numbers = record.get("numbers", record)
    timings = record.get("provenance", {}).get("timings", numbers)      # unsaved: timings still in place
    if numbers.get("run_key") != key:
        raise ValueError(f"the record to restore is of run key {numbers.get('run_key')!r}, this run's is {key!r}: "
                         "another protocol or other data")
    if "cells" not in numbers:
        log.warning("fewshot: the record to restore carries no cell records (written before they were kept): "
                    "only its pilots are restored")
    cell_dir = Path(cell_dir)
    cell_dir.mkdir(parents=True, exist_ok=True)
    pilots = [(size, p) for size, ps in numbers.get("pilot", {}).items() for p in ps]
    pilot_s = timings.get("seconds", {}).get("pilot", 0.0) / max(1, len(pilots))
    todo = {f"pilot_{size}_{p['method']}": {**p, "set": "large" if size == "large" else "d0",
                                            "wall_s": p.get("wall_s", pilot_s)} for size, p in pilots}
    budget = numbers.get("budget", {})
    todo.update({name: {**rec, "wall_s": timings.get("wall_s", {}).get(name, 0.0)}
                 for name, rec in numbers.get("cells", {}).items()
                 if rec["steps"] == budget.get(set_size(rec["set"]))})
    written = []
    for name, rec in todo.items():
        path = cell_dir / f"{name}.json"
        if not path.is_file():
            path.with_suffix(".pt").unlink(missing_ok=True)
            atomic_write(path, lambda tmp, r=rec: Path(tmp).write_text(json.dumps({**r, "restored": True})))
            written.append(name)
    return written
