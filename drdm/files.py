"""Files written whole or not at all: the one atomic writer of the package (results, cells, caches,
checkpoints, NIfTI outputs and manifests all go through it). Low-level: imports nothing of drdm."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write", "temp_affixes"]


def temp_affixes(name: str) -> tuple[str, str]:
    for ext in (".nii.gz", ".nii"):        # keep NIfTI extensions so writers recognise the format
        if name.endswith(ext):
            return f".{name[:-len(ext)]}.", ".tmp" + ext
    return f".{name}.", ".tmp"


def atomic_write(path, write, *, overwrite: bool = True) -> Path:
    """Write ``path`` through a temporary file in its folder, then rename: never half a file.

    ``write(tmp_path)`` fills the temporary file. With ``overwrite=False`` an existing
    ``path`` raises ``FileExistsError`` (checked atomically with a hard link). The
    temporary file is removed on any error; the file gets the usual umask permissions.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix, suffix = temp_affixes(path.name)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=suffix)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)      # mkstemp creates 0600
        if overwrite:
            os.replace(tmp, path)
        else:
            try:                                  # fails if the target exists, even if it appeared meanwhile
                os.link(tmp, path)
            except FileExistsError:
                raise
            except OSError:                       # no hard links on this file system
                if path.exists():
                    raise FileExistsError(str(path)) from None
                os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
