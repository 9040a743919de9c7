"""One text source per notebook: every stored notebooks/NN_x.ipynb is paired by jupytext with a
MyST Markdown file notebooks/NN_x.md holding the same cells, every code cell of the stored
notebook has been executed (the ci outputs are a full run), and every number glued into the
prose ({glue:text}`name`) is defined and stored by a glue(...) call of the same notebook."""
import re
from pathlib import Path

import nbformat
import pytest

jupytext = pytest.importorskip("jupytext")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
# cell metadata that papermill writes on every run and the text files leave out
RUN_METADATA = {"papermill", "execution"}
GLUE_ROLE = re.compile(r"\{glue(?::[a-z]*)?\}`([^`]+)`")
GLUE_DIRECTIVE = re.compile(r"^[`:]{3,}\{glue(?::[a-z]*)?\}\s+(\S+)", re.M)
GLUE_CALL = re.compile(r"\bglue\(\s*(['\"])([^'\"]+)\1")


def cell_view(cell) -> tuple:
    """What must agree between the pair: type, source, tags, and the other metadata that matters
    (e.g. a figure caption under ``mystnb``)."""
    meta = {k: v for k, v in cell.metadata.items() if k not in RUN_METADATA}
    tags = meta.pop("tags", [])
    return cell.cell_type, cell.source, list(tags), meta


def glue_names_in_markdown(nb) -> set[str]:
    names = set()
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for text in GLUE_ROLE.findall(cell.source) + GLUE_DIRECTIVE.findall(cell.source):
                # {glue:text}`name:.1f` carries a format spec; `doc::name` would name another document
                names.add(text.rsplit(":", 1)[0] if ":" in text and "::" not in text else text)
    return names


def glued_outputs(nb) -> dict[str, dict]:
    out = {}
    for cell in nb.cells:
        for o in cell.get("outputs", []) if cell.cell_type == "code" else []:
            scrap = o.get("metadata", {}).get("scrapbook")
            if scrap:
                prefix = scrap.get("mime_prefix", "")
                out[scrap["name"]] = {k[len(prefix):]: v for k, v in o.get("data", {}).items()}
    return out


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_paired_with_its_myst_text_and_in_sync(path):
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata.get("jupytext", {}).get("formats") == "ipynb,md:myst", \
        f"{path.name} is not paired: jupytext --set-formats ipynb,md:myst {path.relative_to(ROOT)}"
    text_path = path.with_suffix(".md")
    assert text_path.is_file(), f"{text_path.name} missing: jupytext --sync {path.relative_to(ROOT)}"
    text = jupytext.read(text_path, fmt="md:myst")
    assert text.metadata["jupytext"]["formats"] == "ipynb,md:myst"
    ours, theirs = [cell_view(c) for c in nb.cells], [cell_view(c) for c in text.cells]
    assert len(ours) == len(theirs), \
        f"{path.name} has {len(ours)} cells, {text_path.name} {len(theirs)}: jupytext --sync notebooks/*.ipynb"
    for i, (a, b) in enumerate(zip(ours, theirs)):
        assert a == b, (f"cell {i} differs between {path.name} and {text_path.name} "
                        f"(jupytext --sync notebooks/*.ipynb, then re-execute): {a!r:.300} != {b!r:.300}")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_stored_code_cell_was_executed_in_one_run(path):
    """The stored outputs come from one run of the whole notebook (papermill), not a partial one."""
    nb = nbformat.read(path, as_version=4)
    counts = [c.execution_count for c in nb.cells if c.cell_type == "code"]
    assert None not in counts, (f"{path.name}: code cells {[i for i, c in enumerate(counts) if c is None]} "
                                f"not executed: papermill -k python3 {path.relative_to(ROOT)} "
                                f"{path.relative_to(ROOT)} --cwd .")
    assert counts == list(range(1, len(counts) + 1)), f"{path.name}: execution counts {counts}"
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            assert out.get("output_type") != "error", f"{path.name}: cell {i} stored an error"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_glued_numbers_are_defined_and_stored(path):
    """Every name the prose pastes with {glue:...} is glued by a code cell of the same notebook,
    and the stored ci outputs hold its value (the book renders the stored notebooks)."""
    nb = nbformat.read(path, as_version=4)
    used = glue_names_in_markdown(nb)
    called = {m[2] for c in nb.cells if c.cell_type == "code" for m in GLUE_CALL.finditer(c.source)}
    stored = glued_outputs(nb)
    assert used <= called, f"{path.name}: glue names used in the prose but never glued: {sorted(used - called)}"
    missing = sorted(n for n in used if "text/plain" not in stored.get(n, {}))
    assert not missing, f"{path.name}: glued values missing from the stored outputs (re-execute): {missing}"
    dynamic = any(re.search(r"\bglue\(\s*[^'\"\s]", c.source) for c in nb.cells if c.cell_type == "code")
    if not dynamic:
        assert called <= set(stored), f"{path.name}: glue calls without stored outputs: {sorted(called - set(stored))}"
