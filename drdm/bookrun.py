"""Execute the book's notebooks with papermill for one profile.

``python -m drdm.bookrun --profile cpu`` runs every ``notebooks/NN_*.ipynb``
with the parameters of ``notebooks/params/<profile>.yaml`` (``common`` plus the
notebook's own section) into ``book/_executed/``. An unknown parameter name or
a failing cell stops the run with exit code 1 (papermill only warns on the first).

``--overlay NAME`` (repeatable) merges ``notebooks/params/NAME.yaml`` over the profile, in the
same layout (``common`` and ``notebooks``): e.g. ``--profile gpu --overlay gpu-smoke`` runs the
gpu profile's sizes on the CPU with a handful of steps (CI), ``--overlay gpu-check`` bounds the
gpu profile's training steps for ``make gpu-check``.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from .provenance import repo_root
from .viz import BATCH_ENV

__all__ = ["load_params", "check_params", "main"]


def _read_params(name: str, root: Path, stems: list) -> tuple[dict, dict]:
    """``(common, {stem: parameters})`` of ``notebooks/params/<name>.yaml``."""
    import yaml

    path = root / "notebooks" / "params" / f"{name}.yaml"
    if not path.exists():
        choices = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise SystemExit(f"error: no parameter file {path} (profiles and overlays: {', '.join(choices)})")
    doc = yaml.safe_load(path.read_text()) or {}
    common = doc.get("common", {}) or {}
    per = doc.get("notebooks", {}) or {}
    unknown = sorted(set(per) - set(stems))
    if unknown:
        raise SystemExit(f"error: {path.name} names notebooks that do not exist: {unknown}")
    return common, per


def load_params(profile: str, root: Path, overlays=()) -> dict:
    """``{notebook_stem: parameters}`` for a profile (``common`` merged in), then each overlay
    file merged over it (its ``common``, then its section for the notebook)."""
    stems = [p.stem for p in sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb"))]
    common, per = _read_params(profile, root, stems)
    params = {s: {**common, **(per.get(s) or {})} for s in stems}
    for name in overlays:
        o_common, o_per = _read_params(name, root, stems)
        params = {s: {**p, **o_common, **(o_per.get(s) or {})} for s, p in params.items()}
    return params


def check_params(notebook: Path, params: dict) -> None:
    """Raise ``SystemExit`` when ``params`` names a parameter the notebook lacks."""
    import papermill

    declared = set(papermill.inspect_notebook(str(notebook)))
    if not declared:
        raise SystemExit(f"error: {notebook.name} has no cell tagged 'parameters'")
    unknown = sorted(set(params) - declared)
    if unknown:
        raise SystemExit(f"error: unknown parameter(s) {unknown} for {notebook.name}; "
                         f"it declares {sorted(declared)}")


def _kernel_manager(folder: str) -> dict:
    """On POSIX, kernels that talk over Unix sockets (``ipc``) rather than TCP ports: two runs
    started side by side (the reproducibility test) then cannot both pick a port that was free
    when each looked. (A side-by-side run that hung was first blamed on that; the hang was
    nbclient's on widget cells, which :func:`drdm.viz.explore` avoids.) Each kernel's sockets live
    in a fresh sub-folder of ``folder`` (two kernels sharing one collide); the caller removes it."""
    if os.name != "posix":
        return {}
    from jupyter_client import AsyncKernelManager
    from traitlets import CaselessStrEnum

    class IPCKernelManager(AsyncKernelManager):
        transport = CaselessStrEnum(["tcp", "ipc"], default_value="ipc", config=True)

        def _ip_default(self) -> str:
            return os.path.join(tempfile.mkdtemp(prefix="k-", dir=folder), "ipc")
    return {"kernel_manager_class": IPCKernelManager}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--overlay", action="append", default=[], metavar="NAME",
                    help="merge notebooks/params/NAME.yaml over the profile (repeatable)")
    ap.add_argument("--only", action="append", help="run only notebooks whose name contains this (repeatable)")
    ap.add_argument("--out", default="book/_executed", help="folder for the executed notebooks")
    ap.add_argument("--results", help="results root passed to every notebook as out_dir (default: results)")
    args = ap.parse_args(argv)
    root = repo_root()
    todo = load_params(args.profile, root, args.overlay)
    out = root / args.out
    out.mkdir(parents=True, exist_ok=True)
    previous = os.environ.get(BATCH_ENV)
    os.environ[BATCH_ENV] = "1"         # kernels inherit it: no widgets in unattended runs (viz.explore)
    try:
        return _run_all(args, todo, out, root)
    finally:                            # the caller's environment as it was
        if previous is None:
            os.environ.pop(BATCH_ENV, None)
        else:
            os.environ[BATCH_ENV] = previous


def _run_all(args, todo: dict, out: Path, root: Path) -> int:
    """Execute each selected notebook of ``todo`` into ``out``; 1 at the first failing one."""
    import papermill

    with tempfile.TemporaryDirectory(prefix="drdm-k-") as sockets:
        kernels = _kernel_manager(sockets)
        for stem, params in todo.items():
            if args.only and not any(o in stem for o in args.only):
                continue
            src = root / "notebooks" / f"{stem}.ipynb"
            if args.results:
                params = {**params, "out_dir": str(Path(args.results).resolve())}
            check_params(src, params)
            t0 = time.time()
            label = "+".join([args.profile, *args.overlay])
            print(f"[{label}] {stem} ...", flush=True)
            try:
                papermill.execute_notebook(str(src), str(out / f"{stem}.ipynb"), parameters=params,
                                           kernel_name="python3", cwd=str(root), progress_bar=False,
                                           **kernels)
            except papermill.PapermillExecutionError as e:
                print(f"error: {stem} failed in cell {e.exec_count}: {e.ename}: {e.evalue}", file=sys.stderr)
                return 1
            print(f"[{label}] {stem} done in {time.time() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
