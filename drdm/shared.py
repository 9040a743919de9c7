"""The one place that finds the project's shared data (the release's weights, M&Ms subset).

The shared folder sits beside a checkout (``<repo>/../shared``) on the developers'
and CI machines; a reader's machine usually has none. Every test, notebook and tool
asks here, so one environment variable decides for all of them:

``DRDM_SHARED``
    unset: use ``<repo>/../shared`` when it exists;
    a folder: use that folder;
    ``none`` (or empty): behave as if there were no shared data (CI runs the
    notebook checks this way to prove that a fresh clone passes).

Functions return ``None`` when a piece is absent, so callers can skip with a reason.
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["ENV", "shared_root", "official_dir", "official_checkpoint", "mnms_dir", "acdc_slices_dir", "absent_reason"]

ENV = "DRDM_SHARED"
_OFFICIAL_CKPT = Path("models") / "cmr_recresacnet" / "000000_cmr_recresacnet.pth"


def shared_root() -> Path | None:
    """The shared folder, or ``None`` (absent, or hidden by ``DRDM_SHARED=none``)."""
    value = os.environ.get(ENV)
    if value is not None:
        if value.strip().lower() in ("", "none", "0", "off"):
            return None
        path = Path(value).expanduser()
        return path if path.is_dir() else None
    # the checkout this package was imported from, not the current directory
    candidate = Path(__file__).resolve().parents[2] / "shared"
    return candidate if candidate.is_dir() else None


def _part(*parts) -> Path | None:
    root = shared_root()
    if root is None:
        return None
    path = root.joinpath(*parts)
    return path if path.exists() else None


def official_dir() -> Path | None:
    """``reference/official``: the release's checkpoint, golden outputs and statistics."""
    return _part("reference", "official")


def official_checkpoint() -> Path | None:
    """The release's 2-D cardiac checkpoint ``000000_cmr_recresacnet.pth``."""
    return _part("reference", "official", _OFFICIAL_CKPT)


def mnms_dir() -> Path | None:
    """``data/mnms_subset``: 20 M&Ms subjects with labels (development and tests only)."""
    return _part("data", "mnms_subset")


def acdc_slices_dir() -> Path | None:
    """``data/acdc_slices``: 70 ACDC subjects in the SSL4MIS slice form (``slices/*.h5``)."""
    return _part("data", "acdc_slices")


def absent_reason(what: str) -> str:
    """A one-line skip reason naming what is missing and why."""
    if os.environ.get(ENV, None) is not None and shared_root() is None:
        return f"{what}: shared data hidden or missing ({ENV}={os.environ[ENV]!r})"
    return f"{what}: ../shared (beside the checkout) not present; set {ENV} to its folder"
