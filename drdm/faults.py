"""What a long run does when the machine runs out of room: one line, no partial file, resumable.

The long runners (few-shot cells, the augmented-copy cache, the registration experiment,
``make fidelity``) work in units whose results are written atomically (cells, cache files,
result lines). :func:`guard` wraps one unit: a full disk (``ENOSPC``, ``EDQUOT``) or a
``MemoryError`` inside it becomes :class:`RunStopped`, whose one-line message names the unit
and the cause and says that re-running the same command resumes; the atomic writers have
already removed their temporary files, so what was finished is kept and nothing partial is
left. The command line prints the line and exits with :data:`EXIT_STOPPED` (75, ``EX_TEMPFAIL``:
try again later), not the usage code 2.
"""
from __future__ import annotations

import contextlib
import errno

__all__ = ["RunStopped", "EXIT_STOPPED", "guard", "exhausted"]

#: exit code of a run stopped by a full disk or lack of memory (sysexits' EX_TEMPFAIL)
EXIT_STOPPED = 75
_FULL = (errno.ENOSPC, errno.EDQUOT)


class RunStopped(RuntimeError):
    """A long run stopped inside one unit of work for lack of disk or memory (one-line message)."""


def exhausted(exc: BaseException) -> str | None:
    """``"out of memory"`` / ``"disk full"`` when ``exc`` is one of those, else ``None``."""
    if isinstance(exc, MemoryError):
        return "out of memory (MemoryError)"
    if isinstance(exc, OSError) and exc.errno in _FULL:
        return f"disk full ({errno.errorcode.get(exc.errno, exc.errno)}: {exc.strerror or exc})"
    return None


@contextlib.contextmanager
def guard(unit: str):
    """Run one unit of work; a full disk or a ``MemoryError`` in it raises :class:`RunStopped`.

    >>> try:
    ...     with guard("cell n5_none_s0"):
    ...         raise MemoryError
    ... except RunStopped as e:
    ...     print(e)
    cell n5_none_s0: stopped, out of memory (MemoryError); nothing of it was kept, finished work is; re-run the same command to resume
    """
    try:
        yield
    except (MemoryError, OSError) as e:
        why = exhausted(e)
        if why is None:
            raise
        raise RunStopped(f"{unit}: stopped, {why}; nothing of it was kept, finished work is; "
                         "re-run the same command to resume") from None
