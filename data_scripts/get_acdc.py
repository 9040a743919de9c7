#!/usr/bin/env python3
"""ACDC (Automated Cardiac Diagnosis Challenge): verify a download and lay it out for drdm.data.load_acdc.

ACDC needs a (free) registration, so this script cannot fetch it on its own.
Download the zip yourself, then:

    python data_scripts/get_acdc.py --zip ACDC.zip --out data/acdc
    python data_scripts/get_acdc.py --from-dir ~/Downloads/ACDC/database --out data/acdc
    python data_scripts/get_acdc.py --base-url https://my.mirror/acdc/ --name ACDC.zip --out data/acdc

Output: OUT/{training,testing}/patientNNN/{Info.cfg, patientNNN_frameXX.nii.gz,
patientNNN_frameXX_gt.nii.gz} for the ED and ES frames named in Info.cfg (the 4-D
cine files are not copied), plus OUT/SHA256SUMS. Every file is read completely and
image/label shapes are compared. Exit code 2 with one line on stderr on any problem.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _fetch  # noqa: E402

SITE = "https://www.creatis.insa-lyon.fr/Challenge/acdc/"
MANUAL = [
    "ACDC needs a free registration; download it by hand:",
    f"  1. open {SITE} and follow the link to the dataset (Human Heart Project portal);",
    "  2. sign in / register and download the ACDC zip (NIfTI, 'database' with training and testing);",
    "  3. run: python data_scripts/get_acdc.py --zip <the zip> --out data/acdc",
    "     (or --from-dir <the unpacked 'database' folder>).",
]
SHORT = f"Download the ACDC zip by hand from {SITE} (registration), then run get_acdc.py --zip <zip> --out DIR."
CFG = re.compile(r"(?:^|(.*)/)(patient\d{3})/Info\.cfg")


def _frames(cfg_path: Path, name: str) -> dict[str, int]:
    info = {}
    for line in cfg_path.read_text(errors="replace").splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            info[k.strip()] = v.strip()
    try:
        return {"ED": int(info["ED"]), "ES": int(info["ES"])}
    except (KeyError, ValueError):
        raise _fetch.FetchError(f"{name}: no valid 'ED: <frame>' and 'ES: <frame>' lines") from None


def convert(src: Path, out: Path, overwrite: bool = False) -> list[Path]:
    written = []
    with _fetch.Source(src) as s:
        names = set(s.names())
        cfgs = sorted((m.group(2), m.group(1) or "", n) for n in names if (m := CFG.fullmatch(n)))
        if not cfgs:
            raise _fetch.FetchError(f"{src}: no ACDC patient folders (patientNNN/Info.cfg) found; "
                                    f"is this the ACDC download?")
        for pid, parent, cfg_name in cfgs:
            folder = f"{parent}/{pid}" if parent else pid
            split = next((p for p in ("training", "testing") if p in parent.split("/")), "")
            dest_dir = out / split / pid
            cfg_local = s.local(cfg_name)
            frames = _frames(cfg_local, f"{src}:{cfg_name}")
            for phase, frame in frames.items():
                base = f"{pid}_frame{frame:02d}"
                img_name, gt_name = f"{folder}/{base}.nii.gz", f"{folder}/{base}_gt.nii.gz"
                if img_name not in names:
                    raise _fetch.FetchError(f"{src}:{img_name}: missing (Info.cfg says {phase}: {frame})")
                img_local = s.local(img_name)
                img, _ = _fetch.check_nifti(img_local, f"{src}:{img_name}")
                pairs = [(img_local, base + ".nii.gz")]
                if gt_name in names:
                    gt_local = s.local(gt_name)
                    gt, arr = _fetch.check_nifti(gt_local, f"{src}:{gt_name}")
                    if gt.shape != img.shape:
                        raise _fetch.FetchError(f"{src}:{gt_name}: label shape {gt.shape} differs from "
                                                f"image shape {img.shape}")
                    if arr.min() < 0 or arr.max() > 3:
                        raise _fetch.FetchError(f"{src}:{gt_name}: label values outside ACDC's 0-3")
                    pairs.append((gt_local, base + "_gt.nii.gz"))
                for local, fname in pairs:
                    _fetch.place(local, dest_dir / fname, overwrite=overwrite, move=s.is_zip)
                    written.append(dest_dir / fname)
            _fetch.place(cfg_local, dest_dir / "Info.cfg", overwrite=overwrite, move=s.is_zip)
            written.append(dest_dir / "Info.cfg")
            _fetch.info(f"ok       {pid} (ED {frames['ED']}, ES {frames['ES']})")
    return written


def main() -> None:
    p = _fetch.parser(__doc__.splitlines()[0], out_default="data/acdc", base_default=None)
    _fetch.add_source_args(p, "ACDC.zip")
    args = p.parse_args()
    src = _fetch.resolve_source(args, MANUAL, SHORT)
    out = Path(args.out)
    written = convert(src, out, args.overwrite)
    _fetch.write_sums(out, written)
    print(f"{len(written)} files under {out}; load them with drdm.data.load_acdc({str(out)!r})")


if __name__ == "__main__":
    _fetch.run(main)
