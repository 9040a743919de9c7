"""Shared helpers for the data_scripts: verified, resumable downloads that fail fast offline.

Standard library only (numpy/nibabel are imported by the dataset scripts when they
convert files). Every failure the user can fix ends the script with exit code 2
and ONE line on stderr that names the file or URL and what to do.

* :func:`download` streams into ``<dest>.part``, resumes it with an HTTP
  ``Range`` request, checks the sha256, then renames atomically. A wrong
  checksum deletes the download, so a re-run starts clean.
* Before connecting, the host name is resolved with a deadline and the server
  (or the configured proxy) is probed with a short connect timeout, so an
  offline machine gets its answer within a few seconds.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import socket
import sys
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

EXIT_FAIL = 2
DNS_DEADLINE = 3.0       # s to resolve a host name (getaddrinfo has no timeout of its own)
CONNECT_TIMEOUT = 4.0    # s to open the TCP connection; DNS + connect stay under 10 s
READ_TIMEOUT = 30.0      # s without a byte before a transfer is abandoned (re-run resumes it)
CHUNK = 1 << 16
USER_AGENT = "drdm-data-scripts/1"


class FetchError(Exception):
    """A failure to report as one line, then exit with code 2."""


def one_line(text) -> str:
    return " ".join(str(text).split())


def fail(message) -> "NoReturn":  # noqa: F821
    print(one_line(message), file=sys.stderr, flush=True)
    raise SystemExit(EXIT_FAIL)


def run(main) -> None:
    """Call ``main()``; turn :class:`FetchError` into one line on stderr and exit code 2."""
    try:
        main()
    except FetchError as e:
        fail(e)
    except KeyboardInterrupt:
        print("interrupted; re-run the same command to resume", file=sys.stderr)
        raise SystemExit(130)


def info(message) -> None:
    print(message, flush=True)


# ---------------------------------------------------------------- files

def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def safe_relpath(rel: str, where: str = "manifest") -> str:
    """A relative POSIX path that stays inside its folder (no ``..``, not absolute)."""
    p = PurePosixPath(rel.replace("\\", "/"))
    if p.is_absolute() or not p.parts or ".." in p.parts:
        raise FetchError(f"{where}: unsafe path {rel!r} (must be relative, without '..')")
    return p.as_posix()


def read_checksums(path) -> list[tuple[str, str]]:
    """``sha256sum``-style lines ``<64 hex>  <relative path>``; ``#`` starts a comment."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise FetchError(f"{path}: cannot read checksums file ({e.strerror})") from None
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 1)
        if len(parts) != 2 or len(parts[0]) != 64 or any(c not in "0123456789abcdefABCDEF" for c in parts[0]):
            raise FetchError(f"{path}:{n}: expected '<sha256 hex>  <relative path>', got {line!r}")
        out.append((safe_relpath(parts[1].lstrip("*").strip(), f"{path}:{n}"), parts[0].lower()))
    if not out:
        raise FetchError(f"{path}: no checksum lines")
    return out


def atomic_copy(src, dest, *, move: bool = False) -> Path:
    """Copy (or move) ``src`` to ``dest`` through a temporary file in ``dest``'s folder."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    os.close(fd)
    try:
        if move:
            os.replace(src, tmp)
        else:
            shutil.copyfile(src, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def place(src, dest, *, overwrite: bool = False, move: bool = False) -> str:
    """Put ``src`` at ``dest`` unless an identical file is there; refuse a different one."""
    dest = Path(dest)
    if dest.exists():
        if sha256_file(dest) == sha256_file(src):
            if move:
                os.unlink(src)
            return "same"
        if not overwrite:
            raise FetchError(f"{dest}: exists with different content; pass --overwrite to replace it")
    atomic_copy(src, dest, move=move)
    return "written"


# ---------------------------------------------------------------- sources: a folder or a zip

class Source:
    """A dataset as downloaded: a folder, or a zip read member by member.

    ``names()`` lists POSIX paths relative to the root; ``local(name)`` gives a
    readable file path (zip members are unpacked into a private temporary folder
    on demand, by computed name, so a malicious member name cannot escape it).
    """

    def __init__(self, path):
        self.path = Path(path)
        self._zip = None
        self._tmp = None
        if self.path.is_dir():
            self._names = sorted(p.relative_to(self.path).as_posix() for p in self.path.rglob("*") if p.is_file())
        elif self.path.is_file():
            try:
                self._zip = zipfile.ZipFile(self.path)
            except (zipfile.BadZipFile, OSError) as e:
                raise FetchError(f"{self.path}: not a readable zip archive ({one_line(e)})") from None
            self._names = sorted(n for n in self._zip.namelist() if not n.endswith("/"))
        else:
            raise FetchError(f"{self.path}: no such file or folder")

    @property
    def is_zip(self) -> bool:
        return self._zip is not None

    def names(self) -> list[str]:
        return list(self._names)

    def local(self, name: str) -> Path:
        if self._zip is None:
            return self.path / name
        if self._tmp is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="drdm-unpack-"))
        target = self._tmp / f"{len(os.listdir(self._tmp)):06d}_{PurePosixPath(name).name}"
        try:
            with self._zip.open(name) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, CHUNK)
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise FetchError(f"{self.path}: member {name} is corrupt ({one_line(e)})") from None
        return target

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---------------------------------------------------------------- network

def _resolve(host: str, port: int, deadline: float):
    """getaddrinfo in a daemon thread, abandoned after ``deadline`` seconds."""
    box = {}

    def work():
        try:
            box["addr"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as e:
            box["error"] = e

    t = threading.Thread(target=work, daemon=True)
    t.start()
    t.join(deadline)
    if t.is_alive():
        raise OSError(f"no DNS answer for {host} within {deadline:.0f} s")
    if "error" in box:
        raise box["error"]
    return box["addr"]


def _loopback(host: str) -> bool:
    return host == "localhost" or host.startswith("127.") or host == "::1"


def _probe(url: str) -> None:
    """Fail fast when the server (or the proxy in front of it) cannot be reached."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise OSError("unsupported URL (need http:// or https://)")
    host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not _loopback(host) and not urllib.request.proxy_bypass(host):
        p = urllib.parse.urlsplit(proxy if "://" in proxy else "http://" + proxy)
        host, port = p.hostname, p.port or 80
    last = None
    for family, kind, proto, _, addr in _resolve(host, port, DNS_DEADLINE):
        s = socket.socket(family, kind, proto)
        s.settimeout(CONNECT_TIMEOUT)
        try:
            s.connect(addr)
            return
        except OSError as e:
            last = e
        finally:
            s.close()
    raise last or OSError(f"no address for {host}")


def _reason(e: BaseException) -> str:
    r = getattr(e, "reason", None) or e
    if isinstance(r, socket.gaierror):
        return f"host not found: {r.strerror or r}"
    if isinstance(r, ConnectionRefusedError):
        return "connection refused"
    if isinstance(r, (socket.timeout, TimeoutError)):
        return "timed out"
    return one_line(getattr(r, "strerror", None) or r)


def download(url: str, dest, sha256: str | None = None, *, manual: str = "",
             read_timeout: float = READ_TIMEOUT) -> Path:
    """Fetch ``url`` into ``dest``, resuming ``dest.part``, verifying ``sha256``.

    An existing ``dest`` with the right checksum is kept (nothing is fetched).
    Raises :class:`FetchError` (one line, naming the URL and ``manual`` steps)
    when the host cannot be reached, the server answers an error, the transfer
    breaks (the ``.part`` file stays for a resume) or the checksum is wrong (the
    download is deleted).
    """
    dest = Path(dest)
    if dest.exists():
        if sha256 is None or sha256_file(dest) == sha256:
            info(f"ok       {dest} (already there)")
            return dest
        raise FetchError(f"{dest}: exists but its sha256 differs from {sha256}; delete it and re-run")
    part = dest.with_name(dest.name + ".part")
    tail = f" {manual}" if manual else ""
    try:
        _probe(url)
    except OSError as e:
        raise FetchError(f"cannot reach {url} ({_reason(e)}).{tail}") from None
    dest.parent.mkdir(parents=True, exist_ok=True)

    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    resp = None
    try:
        handlers = [urllib.request.ProxyHandler({})] if _loopback(urllib.parse.urlsplit(url).hostname) else []
        resp = urllib.request.build_opener(*handlers).open(request, timeout=read_timeout)
    except urllib.error.HTTPError as e:
        if not (e.code == 416 and offset):          # 416: the .part already holds everything
            raise FetchError(f"{url}: HTTP {e.code} {one_line(e.reason)}.{tail}") from None
    except (urllib.error.URLError, OSError) as e:
        raise FetchError(f"cannot reach {url} ({_reason(e)}).{tail}") from None

    if resp is not None:
        with resp:
            resumed = offset and resp.status == 206 and \
                (resp.headers.get("Content-Range") or "").startswith(f"bytes {offset}-")
            expected = resp.headers.get("Content-Length")
            expected = int(expected) if expected and expected.isdigit() else None
            written = 0
            try:
                with open(part, "ab" if resumed else "wb") as f:
                    while True:
                        chunk = resp.read(CHUNK)
                        if not chunk:
                            break
                        f.write(chunk)
                        written += len(chunk)
            except (OSError, urllib.error.URLError) as e:
                raise FetchError(f"{url}: transfer broke after {offset + written} bytes ({_reason(e)}); "
                                 f"re-run to resume from {part}") from None
            if expected is not None and written != expected:
                raise FetchError(f"{url}: got {written} of {expected} bytes; re-run to resume from {part}")
            info(f"{'resumed ' if resumed else 'fetched '} {dest} ({offset + written if resumed else written} bytes)")
    if sha256 is not None:
        got = sha256_file(part)
        if got != sha256:
            part.unlink()
            raise FetchError(f"{url}: sha256 mismatch (got {got}, expected {sha256}); the download was deleted")
    os.replace(part, dest)
    return dest


# ---------------------------------------------------------------- command line

def parser(description: str, *, out_default: str, base_default: str | None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=out_default, help=f"output folder (default: {out_default})")
    p.add_argument("--base-url", default=base_default,
                   help="where to download from (a mirror, or a local server in tests)"
                        + (f"; default {base_default}" if base_default else ""))
    p.add_argument("--timeout", type=float, default=READ_TIMEOUT,
                   help=f"seconds without data before a transfer is abandoned (default {READ_TIMEOUT:.0f})")
    return p


def join_url(base: str, rel: str) -> str:
    return base.rstrip("/") + "/" + urllib.parse.quote(rel)


# ---------------------------------------------------------------- dataset conversion helpers

def add_source_args(p: argparse.ArgumentParser, default_name: str) -> None:
    """--from-dir / --zip (already downloaded), or --base-url + --name (a mirror)."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--from-dir", metavar="DIR", help="an unpacked download")
    g.add_argument("--zip", metavar="FILE", help="a downloaded zip")
    p.add_argument("--name", default=default_name,
                   help=f"file to fetch under --base-url (default {default_name})")
    p.add_argument("--sha256", help="expected sha256 of the zip (checked when given)")
    p.add_argument("--overwrite", action="store_true", help="replace output files whose content differs")


def resolve_source(args, manual_lines: list[str], short_manual: str) -> Path:
    """The folder or zip to convert; downloads it when --base-url is given.

    With no source at all, prints the manual steps and exits with code 2.
    """
    if args.from_dir:
        d = Path(args.from_dir)
        if not d.is_dir():
            raise FetchError(f"{d}: no such folder (--from-dir)")
        return d
    if args.zip:
        z = Path(args.zip)
        if not z.is_file():
            raise FetchError(f"{z}: no such file (--zip)")
        if args.sha256 and sha256_file(z) != args.sha256.lower():
            raise FetchError(f"{z}: sha256 mismatch (expected {args.sha256}); re-download it")
        return z
    if args.base_url:
        url = join_url(args.base_url, args.name)
        return download(url, Path(args.out) / ".downloads" / args.name,
                        args.sha256.lower() if args.sha256 else None, manual=short_manual,
                        read_timeout=args.timeout)
    print("\n".join(manual_lines), file=sys.stderr)
    raise SystemExit(EXIT_FAIL)


def check_nifti(path, name: str):
    """Read a NIfTI file completely (catches truncation); return (nibabel image, array)."""
    import nibabel as nib
    import numpy as np

    try:
        img = nib.load(str(path), mmap=False)
        arr = np.asanyarray(img.dataobj)
    except Exception as e:  # nibabel raises many kinds for broken files
        raise FetchError(f"{name}: not a readable NIfTI file ({one_line(e)})") from None
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise FetchError(f"{name}: NaN or Inf values")
    return img, arr


def write_sums(out, paths) -> Path:
    """Record the sha256 of every converted file in OUT/SHA256SUMS (sha256sum format)."""
    out = Path(out)
    lines = {}
    sums = out / "SHA256SUMS"
    if sums.exists():
        for rel, sha in read_checksums(sums):
            lines[rel] = sha
    for p in paths:
        lines[Path(p).relative_to(out).as_posix()] = sha256_file(p)
    tmp = sums.with_name(".SHA256SUMS.tmp")
    tmp.write_text("".join(f"{sha}  {rel}\n" for rel, sha in sorted(lines.items())))
    os.replace(tmp, sums)
    return sums
