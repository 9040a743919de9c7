"""How the recovery network runs: the paths of :func:`drdm.sampling.deform` (``path=``).

``"fast"`` (the default on CPU for 2-D images of side >= 128): a channels-last copy of the
network whose U-Net pass is compiled by ``torch.compile`` (inductor: norms, activations, additions
and concatenations fused around oneDNN's convolutions; the fused kernels single-threaded, so a
sample's bits do not depend on the thread count), and on CPU the samples of a batch spread over the
intra-op threads, one sample per thread (a 10-channel convolution at 256^2 gains about 1.6x from a
second thread, two samples gain 2x). Where compilation is unavailable it falls back to
``"channels_last"`` with one warning. ``"channels_last"``: the channels-last copy alone.
``"plain"``: the network as given. The caller's network is never modified; the compiled copy is
kept per network and made again when its weights change. ``DRDM_FAST=0`` makes ``"plain"`` the
default everywhere. Measured in ``benchmarks/sampling.py`` and ``benchmarks/profile_step.py``.
"""
from __future__ import annotations

import copy
import os
import threading
import warnings
import weakref
from concurrent.futures import ThreadPoolExecutor

import torch

__all__ = ["pick_device", "PATHS", "default_path", "fast_layout", "predictor", "per_sample"]


def pick_device(name: str | torch.device = "auto") -> torch.device:
    """The one device picker: ``auto`` (CUDA if available, then Apple MPS, then CPU), ``cpu``,
    ``cuda``, ``cuda:N``, ``mps`` -> a device that works (a tensor is made on it), else a one-line
    ``ValueError`` naming the device and why."""
    try:
        if str(name) != "auto":
            device = torch.device(name)
        elif torch.cuda.is_available():
            device = torch.device("cuda")
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            device = torch.device("mps")
        else:
            device = torch.device("cpu")
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as e:
        text = " ".join(str(e).split()) or type(e).__name__
        raise ValueError(f"device {str(name)!r} is not available ({text})") from None
    return device


PATHS = ("fast", "channels_last", "plain")
#: ``DRDM_FAST=0`` makes ``"plain"`` the default path everywhere (the fast path stays selectable)
_FAST_ENV = "DRDM_FAST"


def default_path(image: torch.Tensor) -> str:
    """The default :data:`PATHS` entry for ``image`` ``(B, C, *S)``: ``"fast"`` on CPU for 2-D images
    of side >= 128 (where it was measured faster, ``benchmarks/sampling.py``), else ``"plain"``."""
    return default_for(image.device, tuple(image.shape[2:]))


def default_for(device, spatial: tuple) -> str:
    """The default path for images of spatial shape ``spatial`` on ``device``."""
    if os.environ.get(_FAST_ENV, "1") == "0":
        return "plain"
    big_2d = len(spatial) == 2 and min(spatial) >= 128
    return "fast" if torch.device(device).type == "cpu" and big_2d else "plain"


def fast_layout(net, image, channels_last: bool | None):
    """A channels-last copy of ``net`` (or ``net`` itself) and the memory format to feed it."""
    if channels_last is None:
        channels_last = default_path(image) != "plain"
    if not channels_last:
        return net, None
    fmt = torch.channels_last if image.dim() == 4 else torch.channels_last_3d
    return copy.deepcopy(net).to(memory_format=fmt), fmt


class _Fast:
    """A channels-last copy of a network whose U-Net pass is compiled (module docstring, ``"fast"``).

    Kept per network (:func:`predictor`) so that compilation happens once per process and input
    shape; a change of the network's weights makes a new copy. Compilation of a new shape runs
    in the calling thread, under a lock, before any worker thread uses it.
    """
    _lock = threading.Lock()

    def __init__(self, net, fmt):
        self.fingerprint = _fingerprint(net)
        self.fmt = fmt
        self.model = copy.deepcopy(net).to(memory_format=fmt).eval()
        self.compiled = True
        try:
            # cpp.threads=1: the fused kernels' reductions never split across threads, so one
            # sample gives the same bits whether it runs alone on 2 threads or in a worker on 1
            self.model.unet = torch.compile(self.model.unet, dynamic=False, options={"cpp.threads": 1})
        except Exception as e:     # pragma: no cover - torch builds without dynamo
            self._fallback(e)
        self.shapes = set()

    def _fallback(self, err):
        warnings.warn(f"drdm: torch.compile is unavailable here ({type(err).__name__}: {err}); the fast "
                      "path runs the channels-last network uncompiled", RuntimeWarning, stacklevel=3)
        self.model.unet = type(self.model).unet.__get__(self.model)
        self.compiled = False

    @property
    def path(self) -> str:
        return "fast" if self.compiled else "channels_last"

    def prepare(self, x, t):
        """Compile for ``x``'s shape now, in this thread, once: for this thread's thread count and
        for the workers' one thread (dynamo's guards include the thread count)."""
        threads = torch.get_num_threads()
        key = (tuple(x.shape), x.dtype, x.device.type, torch.is_inference_mode_enabled(), threads)
        if key in self.shapes:
            return
        with self._lock:
            if key not in self.shapes:
                try:
                    for n in sorted({1, threads}):
                        torch.set_num_threads(n)
                        self(x, t)
                except Exception as e:     # no C++ compiler, an inductor bug: run uncompiled
                    if not self.compiled:
                        raise
                    self._fallback(e)
                finally:
                    torch.set_num_threads(threads)
                self.shapes.add(key)

    def __call__(self, x, t):
        return self.model(x.contiguous(memory_format=self.fmt), t).contiguous()


def _fingerprint(net) -> tuple:
    return tuple((p.data_ptr(), p._version, p.device.type) for p in net.parameters())


_FAST_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def predictor(net, image: torch.Tensor, path: str | None = None):
    """``(predict, path)``: a callable ``(x, t) -> psi`` (voxels) running ``net`` on images like
    ``image`` along ``path`` (:data:`PATHS`; ``None``: :func:`default_path`), and the path it
    really takes (``"fast"`` falls back to ``"channels_last"`` where it cannot compile).
    The caller's network is never modified."""
    path = default_path(image) if path is None else path
    if path not in PATHS:
        raise ValueError(f"path must be one of {PATHS}, got {path!r}")
    if path == "plain":
        return (lambda x, t: net(x, t).contiguous()), path
    fmt = torch.channels_last if image.dim() == 4 else torch.channels_last_3d
    if path == "fast" and not callable(getattr(type(net), "unet", None)):
        path = "channels_last"                 # not a DRDMNet: no U-Net pass to compile
    if path == "channels_last":
        model, _ = fast_layout(net, image, True)
        return (lambda x, t: model(x.contiguous(memory_format=fmt), t).contiguous()), path
    fast = _FAST_CACHE.get(net)
    if fast is None or fast.fingerprint != _fingerprint(net):
        fast = _FAST_CACHE[net] = _Fast(net, fmt)
    return fast, fast.path


def per_sample(fn, n: int, spread: bool):
    """``[fn(0), ..., fn(n-1)]``; with ``spread``, over ``torch.get_num_threads()`` worker threads
    that each run one intra-op thread (grad mode is per thread: workers run without it)."""
    workers = min(n, torch.get_num_threads()) if spread else 1
    if workers <= 1:
        return [fn(i) for i in range(n)]

    def task(i):
        if torch.get_num_threads() != 1:
            torch.set_num_threads(1)          # this worker thread only
        with torch.no_grad():
            return fn(i)
    threads = torch.get_num_threads()
    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="drdm-sample") as pool:
            return list(pool.map(task, range(n)))
    finally:
        # a worker's set_num_threads(1) also reaches libraries whose setting is process-wide (MKL):
        # give the caller back its thread count
        torch.set_num_threads(threads)
