"""What the book's chapters read of the recorded runs: a record with its caption, shown in a
notebook, and the cross-seed spread of the live phantom runs. (IPython is imported only here and
only when a record is displayed; :mod:`drdm.tasks` stays free of it.)"""
from __future__ import annotations

import json
from pathlib import Path

__all__ = ["phantom_spread", "load_recorded", "show_recorded"]


def phantom_spread(task: str) -> dict:
    """``{comparison: spread (fraction)}`` of the recorded cross-seed spread of the ``cpu`` phantom
    runs (``results/cpu/phantom_spread.json``) for ``task`` (``"registration"``: chapter 5's phantom
    Table 3); empty when there is no record."""
    from .provenance import results_dir as committed_results
    path = Path(committed_results()) / "cpu" / "phantom_spread.json"
    if not path.is_file():
        return {}
    block = json.loads(path.read_text())["numbers"]["spread"].get(task, {})
    return {k: v["spread"] for k, v in block.items()}


def load_recorded(name: str, profile: str = "cpu", results_dir=None) -> dict | None:
    """A recorded experiment ``results/<profile>/<name>.json`` with a one-line caption, or ``None``.

    Returns ``{"numbers": ..., "caption": "*Profile ..., data ..., subjects, seeds, checkpoint, time.*"}``
    (for notebooks that show a long run without re-running it).
    """
    from .provenance import results_dir as committed_results
    path = Path(results_dir or committed_results()) / profile / f"{name}.json"
    if not path.is_file():
        return None
    doc = json.loads(path.read_text())
    rec, prov = doc["numbers"], doc.get("provenance", {})
    split = rec["split"] if isinstance(rec.get("split"), dict) else {}
    config = rec["config"] if isinstance(rec.get("config"), dict) else {}
    if "train_subjects" in split:         # the Table 2 / Table 3 experiment runners
        subjects = (f"{len(split['train_subjects'])} training and {len(split.get('test_subjects', []))} "
                    "test subjects")
    elif "test" in split:                 # the stratified ACDC split (few-shot, ED<->ES)
        subjects = (f"{len(split.get('pool', []))} training, {len(split.get('val', []))} validation and "
                    f"{len(split['test'])} test subjects")
    else:
        subjects = f"{len(rec.get('subjects', []))} subjects" if rec.get("subjects") else "subjects not recorded"
    ckpt = rec.get("drdm_checkpoint") or (rec.get("drdm_checkpoint_sha256") or "")[:12] or None
    caption = (f"*Profile `{doc['profile']}`, data `{doc.get('data')}` "
               f"({subjects}), seeds {config.get('seeds', rec.get('seeds'))}, DRDM checkpoint "
               f"`{ckpt}`, {prov.get('wall_time_s', 0) / 60:.0f} min on {prov.get('device')}, "
               f"commit {prov.get('commit')}.*")
    return {"numbers": rec, "caption": caption}


def show_recorded(name: str, verdict, profile: str = "cpu") -> bool:
    """Display a recorded run (:func:`load_recorded`) in a notebook: caption, table, and the
    lines of ``verdict(numbers)``. Prints a hint and returns False when there is none."""
    rec = load_recorded(name, profile)
    if rec is None:
        print(f"no recorded run results/{profile}/{name}.json (drdm experiment ... --profile {profile} makes one)")
        return False
    from IPython.display import Markdown, display
    display(Markdown(rec["caption"] + "\n\n" + rec["numbers"]["markdown"]))
    print("\n".join(verdict(rec["numbers"])))
    return True
