"""Output folders of the CLI: atomic files, NIfTI DDFs, manifests that let a killed run resume.

Outputs are written atomically (temporary file + rename); ``manifest.json`` is rewritten
atomically after every sample, so a killed run resumes when re-run with the same
arguments: samples the manifest lists (files present, checksums equal) are kept, files of
samples it does not list are leftovers of the same run and are replaced, stale temporary
files are removed. Outputs of another run (a different manifest ``run`` record:
checkpoint, inputs, levels, n, seed, ...) or files without a manifest are refused unless
``overwrite``, which replaces them and removes the files the old manifest listed that the
new run does not produce.

DDF files (written by :func:`drdm.data.save_nifti` with ``vector=True``) are NIfTI vector images of shape ``(*input_file_shape, ndim)`` (intent
``vector``), float32, in **voxels of the input grid**, component ``i`` along array axis
``i``, pull-back convention ``out(x) = in(x + u(x))``.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable


from .data import DataError
from .files import temp_affixes

__all__ = ["DDF_CONVENTION", "sha256_file", "write_text", "check_creatable", "OutputDir"]

DDF_CONVENTION = ("float32 NIfTI vector image (*input_file_shape, ndim), intent 'vector'; voxels of the "
                  "input grid, component i along array axis i; pull-back: out(x) = in(x + u(x))")


def sha256_file(path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------- atomic files

def _atomic_output(path: Path, write: Callable[[str], None], *, overwrite: bool = True) -> Path:
    """:func:`drdm.files.atomic_write`, with the CLI's message for an existing output."""
    from .files import atomic_write
    try:
        return atomic_write(path, write, overwrite=overwrite)
    except FileExistsError:
        raise DataError(f"{path}: exists; pass --overwrite to replace it") from None


def write_text(path: Path, text: str, overwrite: bool = True) -> Path:
    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    return _atomic_output(path, write, overwrite=overwrite)


def check_creatable(path: Path) -> None:
    """For a ``path`` that does not exist yet: its nearest existing ancestor must be a
    writable folder (else :class:`~drdm.data.DataError`)."""
    parent = path.parent
    while not parent.exists() and not parent.is_symlink():
        parent = parent.parent
    if not parent.is_dir():
        raise DataError(f"{path}: cannot create it, {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise DataError(f"{path}: cannot create it, {parent} is not writable")


class OutputDir:
    """Validates an output folder before anything is written, and resumes a killed run.

    Args:
        root: the folder. names: every file the run will write (besides ``manifest.json``).
        run: what determines the outputs (compared with the manifest's ``run`` to resume).
        overwrite: replace outputs of another run / files of unknown origin.

    After :meth:`prepare`, ``done`` maps sample keys to manifest entries that are
    complete (files present, checksums equal).
    """

    MANIFEST = "manifest.json"

    def __init__(self, root, names, run: dict, overwrite: bool):
        self.root = Path(root)
        self.names = list(names)
        self.run = json.loads(json.dumps(run))
        self.overwrite = overwrite
        self.done: dict = {}
        self.stale: list[str] = []

    def _check_writable(self):
        r = self.root
        if r.is_symlink():
            raise DataError(f"{r}: the output path is a symlink; refusing to write through it")
        if r.exists():
            if not r.is_dir():
                raise DataError(f"{r}: exists and is not a folder")
            if not os.access(r, os.W_OK | os.X_OK):
                raise DataError(f"{r}: output folder is not writable")
            return
        check_creatable(r)

    def prepare(self) -> dict:
        self._check_writable()
        for name in self.names + [self.MANIFEST]:
            p = self.root / name
            if p.is_symlink():
                raise DataError(f"{p}: the output path is a symlink; refusing to write through it")
            if p.exists() and not p.is_file():
                raise DataError(f"{p}: exists and is not a file")
        existing = [n for n in self.names if (self.root / n).exists()]
        man_path = self.root / self.MANIFEST
        manifest = None
        if man_path.exists():
            try:
                manifest = json.loads(man_path.read_text())
                if not isinstance(manifest, dict):
                    raise ValueError("not an object")
            except (ValueError, OSError, UnicodeDecodeError):
                if not self.overwrite:
                    raise DataError(f"{man_path}: unreadable manifest; pass --overwrite to start afresh") from None
                manifest = None
        same_run = manifest is not None and manifest.get("run") == self.run
        if same_run:
            for entry in manifest.get("outputs", []):
                files = entry.get("files", {})
                sums = entry.get("sha256", {})
                ok = bool(files) and all((self.root / f).is_file() and sha256_file(self.root / f) == sums.get(k)
                                         for k, f in files.items())
                if ok:
                    self.done[entry["key"]] = entry
        elif manifest is not None and not self.overwrite:
            diff = sorted(k for k in set(self.run) | set(manifest.get("run") or {})
                          if self.run.get(k) != (manifest.get("run") or {}).get(k))
            raise DataError(f"{self.root}: holds outputs of a different run (differs in {', '.join(diff[:4])}); "
                            "pass --overwrite or choose another --out")
        elif existing and not self.overwrite:
            raise DataError(f"{self.root / existing[0]}: exists ({len(existing)} output file(s) present); "
                            "pass --overwrite to replace them")
        if manifest is not None and not same_run:
            # --overwrite: outputs listed by the old run that this run will not produce go
            planned = set(self.names)
            for entry in manifest.get("outputs", []):
                for f in entry.get("files", {}).values():
                    if isinstance(f, str) and f not in planned and "/" not in f and f != self.MANIFEST:
                        self.stale.append(f)
        return self.done

    def create(self):
        """Make the folder, drop stale temporary files and old outputs (after :meth:`prepare`)."""
        self.root.mkdir(parents=True, exist_ok=True)
        prefixes = [temp_affixes(n) for n in self.names + [self.MANIFEST]]
        for p in self.root.iterdir():
            n = p.name
            if n.startswith(".") and any(n.startswith(a) and n.endswith(b) for a, b in prefixes) and p.is_file():
                p.unlink()
        for n in self.stale:
            p = self.root / n
            if p.is_file() and not p.is_symlink():
                p.unlink()

    def write_manifest(self, manifest: dict):
        write_text(self.root / self.MANIFEST, json.dumps(manifest, indent=1, sort_keys=False) + "\n")
