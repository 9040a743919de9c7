"""One recovery network pass on the CPU under each inference runtime the sampling issue asked to try.

Run:  python benchmarks/runtimes.py [--threads 1] [--size 256]

The release's 2-D network (its layout; the release's weights when ``../shared`` has them, else a
seeded initialisation, which runs at the same speed) predicts one field for one ``size``^2 image.
Rows, each timed on ``--threads`` threads in this run:

* ``torch eager``, ``torch channels-last``, ``torch.compile`` (the default ``fast`` path's U-Net
  pass: channels-last, inductor, ``cpp.threads=1``);
* ``ONNX Runtime`` and ``OpenVINO`` on the same pass exported to ONNX (opset 17), when the optional
  packages are installed (``pip install onnx onnxruntime openvino``; not dependencies of drdm).
  OpenVINO runs with its code-generation "snippets" off (with them on, compiling this graph fails
  with "Layout rank can't be larger than tensor rank" in openvino 2025-2026) and float32 precision
  forced: on CPUs with AMX its default precision is bfloat16, timed as an information-only row;
* reduced precision in torch (float16 and bfloat16 autocast), information only.

Each row prints ms per pass, the speed-up over ``torch.compile`` and the largest difference from
the eager float32 output in voxels of the image side (the exact-step test against the release's
golden step allows 5e-3 voxel in the composed field; bfloat16 departs by tenths of a voxel per pass). Writes ``results/bench/runtimes.json``.
"""
from __future__ import annotations

import argparse
import copy
import importlib.util
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import device_name, rate, write  # noqa: E402

from drdm import shared  # noqa: E402
from drdm.checkpoint import load_official  # noqa: E402
from drdm.network import DRDMNet, NetworkConfig  # noqa: E402


class _Pass(torch.nn.Module):
    """The U-Net pass as a module of ``(x, t)``, for export and compilation."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x, t):
        return self.net.unet(x, t)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--min-time", type=float, default=3.0)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    ckpt = shared.official_checkpoint()
    net = load_official(ckpt) if ckpt else DRDMNet(NetworkConfig(ndim=2), generator=torch.Generator().manual_seed(0))
    net = net.eval()
    S = args.size
    x = torch.rand(1, 1, S, S, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([20])
    with torch.no_grad():
        ref = net.unet(x, t)
    rows = []

    def row(name, fn, info=False, note=""):
        with torch.no_grad():
            try:
                ms = 1000 / rate(fn, 1, args.min_time, min_calls=4)
                out = fn()
            except Exception as e:      # an optional runtime that cannot run this graph
                rows.append({"runtime": name, "ms": None, "info_only": info,
                             "note": f"failed: {type(e).__name__}: {str(e).splitlines()[-1][:160]}"})
                print(f"{name:34s} failed ({rows[-1]['note']})")
                return
        out = out.float() if isinstance(out, torch.Tensor) else torch.from_numpy(np.asarray(out)).float()
        diff = S * float((out - ref).abs().max())
        rows.append({"runtime": name, "ms": ms, "max_diff_voxels": diff, "info_only": info, "note": note})

    cl = _Pass(copy.deepcopy(net).to(memory_format=torch.channels_last)).eval()
    xc = x.contiguous(memory_format=torch.channels_last)
    row("torch eager", lambda: net.unet(x, t))
    row("torch channels-last", lambda: cl(xc, t))
    compiled = torch.compile(cl, dynamic=False, options={"cpp.threads": 1})
    row("torch.compile (the fast path's pass)", lambda: compiled(xc, t))

    def autocast(dtype):
        def fn():
            with torch.autocast("cpu", dtype=dtype):
                return cl(xc, t)
        return fn
    row("torch autocast float16", autocast(torch.float16), info=True)
    row("torch autocast bfloat16", autocast(torch.bfloat16), info=True)

    have = {m: importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime", "openvino")}
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / "unet.onnx"
        if have["onnx"] and (have["onnxruntime"] or have["openvino"]):
            torch.onnx.export(_Pass(net).eval(), (x, t), str(onnx_path), dynamo=False, opset_version=17,
                              input_names=["x", "t"], output_names=["y"])
        xn, tn = x.numpy(), t.numpy()
        if have["onnx"] and have["onnxruntime"]:
            import onnxruntime as ort
            so = ort.SessionOptions()
            so.intra_op_num_threads, so.inter_op_num_threads = args.threads, 1
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
            row(f"ONNX Runtime {ort.__version__}", lambda: sess.run(None, {"x": xn, "t": tn})[0])
        else:
            rows.append({"runtime": "ONNX Runtime", "ms": None, "note": "not installed"})
        if have["onnx"] and have["openvino"]:
            import openvino as ov
            core = ov.Core()
            for name, cfg, info in (("float32", {"INFERENCE_PRECISION_HINT": "f32"}, False),
                                    ("default precision", {}, True)):
                cfg = {"INFERENCE_NUM_THREADS": args.threads, "SNIPPETS_MODE": "DISABLE", **cfg}
                try:
                    model = core.compile_model(str(onnx_path), "CPU", cfg)
                    req = model.create_infer_request()
                    prec = str(model.get_property("INFERENCE_PRECISION_HINT")).split("'")[-2] if "'" in str(model.get_property("INFERENCE_PRECISION_HINT")) else str(model.get_property("INFERENCE_PRECISION_HINT"))
                    row(f"OpenVINO {ov.__version__.split('-')[0]} {name} ({prec})",
                        lambda req=req, model=model: req.infer({"x": xn, "t": tn})[model.output(0)], info=info)
                except Exception as e:
                    rows.append({"runtime": f"OpenVINO {name}", "ms": None, "note": f"failed: {e}"[:200]})
        else:
            rows.append({"runtime": "OpenVINO", "ms": None, "note": "not installed"})

    base = next(r["ms"] for r in rows if r["runtime"].startswith("torch.compile"))
    print(f"one U-Net pass at {S}^2, batch 1, {args.threads} thread(s), {device_name(torch.device('cpu'))}")
    print(f"{'runtime':44s} {'ms':>8s} {'vs compile':>10s} {'max diff (vox)':>15s}")
    for r in rows:
        if r["ms"] is None:
            print(f"{r['runtime']:44s} {'-':>8s} {'':>10s} {'':>15s} {r['note']}")
            continue
        r["speedup_vs_compile"] = base / r["ms"]
        print(f"{r['runtime']:44s} {r['ms']:8.1f} {r['speedup_vs_compile']:9.2f}x {r['max_diff_voxels']:15.2e}"
              f"{'  (info only)' if r['info_only'] else ''}")
    write("runtimes", {"size": S, "threads": args.threads, "weights": "release" if ckpt else "seeded initialisation",
                       "device": device_name(torch.device("cpu")), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
