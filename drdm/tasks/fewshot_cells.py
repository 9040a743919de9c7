"""The few-shot run folder's cell records: set aside a cell trained to another budget, write back
the cells, pilots and copy ledger a saved record carries into a lost folder (:func:`restore_cells`), and
account for the run's copies (:func:`copy_accounts`)."""
from __future__ import annotations

import json
from pathlib import Path

from ..files import atomic_write
from ..provenance import join_timings
from ._common import log
from .fewshot_report import set_size

__all__ = ["supersede", "restore_cells", "copy_accounts", "ledger_path"]


def ledger_path(cell_dir: str | Path) -> Path:
    """The run's ledger of the copies its cells trained on (one entry per method and slice),
    ``<work>/cells/<run key>.copies.json``: beside the cell folder, not among its records, so the record's
    copy accounting survives a lost cache (the copies are then remade, the same by seed)."""
    cell_dir = Path(cell_dir)
    return cell_dir.parent / f"{cell_dir.name}.copies.json"


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
    kept. The record's ledger of copies made (``cache["slices"]``) goes back to :func:`ledger_path`, so
    the copies lost with the folder still count. Returns the names of the cell and pilot records written.

    Raises:
        ValueError: the record is of another run key (another protocol or data), or carries no run key.
    """
    numbers = join_timings(record.get("numbers", record), record.get("provenance", {}).get("timings", {}))
    if numbers.get("run_key") != key:
        raise ValueError(f"the record to restore is of run key {numbers.get('run_key')!r}, this run's is {key!r}: "
                         "another protocol or other data")
    if "cells" not in numbers:
        log.warning("fewshot: the record to restore carries no cell records (written before they were kept): "
                    "only its pilots are restored")
    cell_dir = Path(cell_dir)
    cell_dir.mkdir(parents=True, exist_ok=True)
    pilots = [(size, p) for size, ps in numbers.get("pilot", {}).items() for p in ps]
    pilot_s = numbers.get("seconds", {}).get("pilot", 0.0) / max(1, len(pilots))
    todo = {f"pilot_{size}_{p['method']}": {**p, "set": "large" if size == "large" else "d0",
                                            "wall_s": p.get("wall_s", pilot_s)} for size, p in pilots}
    budget = numbers.get("budget", {})
    todo.update({name: {**rec, "wall_s": numbers.get("wall_s", {}).get(name, 0.0)}
                 for name, rec in numbers.get("cells", {}).items()
                 if rec["steps"] == budget.get(set_size(rec["set"]))})
    _restore_ledger(numbers.get("cache", {}), ledger_path(cell_dir))
    written = []
    for name, rec in todo.items():
        path = cell_dir / f"{name}.json"
        if not path.is_file():
            path.with_suffix(".pt").unlink(missing_ok=True)
            atomic_write(path, lambda tmp, r=rec: Path(tmp).write_text(json.dumps({**r, "restored": True})))
            written.append(name)
    return written


def _restore_ledger(cache: dict, path: Path) -> None:
    """Write a saved record's copy ledger (``cache["slices"]``, its timings joined back) into ``path``;
    entries the folder's own ledger already has are kept. A record written before the ledger carries
    per-method totals only: they are kept under ``"earlier"``, a floor of the accounting."""
    ledger = {"slices": {m: {name: {"seconds": 0.0, **e} for name, e in v.items()}
                         for m, v in cache.get("slices", {}).items()}}
    if "earlier" in cache:
        ledger["earlier"] = {"seconds": {}, **cache["earlier"]}
    elif "slices" not in cache and isinstance(cache.get("copies"), dict) and cache["copies"]:
        spent = cache.get("seconds", {})
        ledger["earlier"] = {"copies": cache["copies"], "bytes": cache["bytes"],
                             "seconds": spent if isinstance(spent, dict) else {}}   # oldest form: one number
    have = _read(path)
    merged = {"slices": _merge(ledger["slices"], have.get("slices", {}))}
    if "earlier" in have or "earlier" in ledger:
        merged["earlier"] = have.get("earlier", ledger.get("earlier"))
    _write_changed(path, merged, have)


def copy_accounts(cell_dir: str | Path, on_disk: dict[str, dict[str, dict]]) -> dict:
    """The record's ``cache`` block: the copies the run's methods made, per method (``copies``, ``seconds``)
    and in all (``bytes``), with the per-slice ledger under ``slices``.

    ``on_disk`` is ``{method: AugCache.ledger(...)}`` for the run's largest labelled set. It is merged into
    the run's ledger (:func:`ledger_path`; what is on disk now wins; entries for copies no longer on disk, restored
    from a saved record or counted by an earlier call, stay), which is written back when it changed: so a
    lost cache, remade in part, still counts every copy once. A ledger restored from a record written before
    it has per-method totals only (``"earlier"``): each total is then the larger of the two, a lower bound
    until the remade copies pass it.
    """
    path = ledger_path(cell_dir)
    have = _read(path)
    merged = _merge(have.get("slices", {}), on_disk)
    _write_changed(path, {**have, "slices": merged}, have)
    slices = {m: merged[m] for m in on_disk}
    copies = {m: sum(e["copies"] for e in v.values()) for m, v in slices.items()}
    seconds = {m: sum(e["seconds"] for e in v.values()) for m, v in slices.items()}
    nbytes = sum(e["bytes"] for v in slices.values() for e in v.values())
    out = {"slices": slices}
    if "earlier" in have:
        old = have["earlier"]
        out["earlier"] = old
        copies = {m: max(v, old["copies"].get(m, 0)) for m, v in copies.items()}
        seconds = {m: max(v, old["seconds"].get(m, 0.0)) for m, v in seconds.items()}
        nbytes = max(nbytes, old["bytes"])
    return {"bytes": nbytes, "seconds": {m: round(v, 1) for m, v in seconds.items()}, "copies": copies, **out}


def _merge(base: dict, over: dict) -> dict:
    """Two ledgers' ``{method: {slice: entry}}`` joined slice by slice, ``over``'s entry winning."""
    return {m: {**base.get(m, {}), **over.get(m, {})} for m in dict.fromkeys([*base, *over])}   # ordered


def _read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _write_changed(path: Path, ledger: dict, have: dict) -> None:
    """Write ``ledger`` to ``path`` (atomically) when it differs from ``have`` and holds anything."""
    if ledger != have and (any(ledger["slices"].values()) or "earlier" in ledger):
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(ledger)))
