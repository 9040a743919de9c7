#!/usr/bin/env python3
"""Download the official DRDM release files (2-D cardiac weights, config, sample images).

Source: github.com/jianqingzheng/def_diff_rec (Apache-2.0) at commit
1c70370f0e0159161daae726d96d6cf975cac5ef, raw files from raw.githubusercontent.com.
Each file is checked against its sha256 and keeps the release's relative path under
--out, e.g. OUT/models/cmr_recresacnet/000000_cmr_recresacnet.pth.

    python data_scripts/get_official.py --out data/official
    python data_scripts/get_official.py --list            # URLs and checksums, for a manual download

Exit codes: 0 done, 2 offline / server error / checksum mismatch (one line on stderr).
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _fetch  # noqa: E402

COMMIT = "1c70370f0e0159161daae726d96d6cf975cac5ef"
BASE_URL = f"https://raw.githubusercontent.com/jianqingzheng/def_diff_rec/{COMMIT}/"

# relative path in the release -> sha256 (the LICENSE checksum is that of the copy in
# ../shared/reference/official, which was taken unchanged from the same commit)
FILES = [
    ("models/cmr_recresacnet/000000_cmr_recresacnet.pth",
     "c9e93ccbd99ad288bb1c961f980141d2c8c91115e8a5986d7a20a98f64ae8e93"),
    ("Config/config_cmr.yaml",
     "487b7cacf59bd61df6d387af8602913763a23e9b5f43c79626151c3eb3e245fa"),
    ("Data/Tgt_data/cmr/Tr/patient001_frame01.nii.gz",
     "725bdab01314e1e255157aae9d0be8218b7a76736c343485725b60a4d6f324ad"),
    ("Data/Tgt_data/cmr/Gt/patient001_frame01_gt.nii.gz",
     "c1980730f28b337d80162c11f93084860c77089804f2e4b0f6d5e313c73e1ebc"),
    ("Data/Src_data/CMR_processed_rmbg_resize/OpenDataset_162867.nii.gz",
     "22561cb9f29ac22a562de1820483ebe400e1dcaf1c3675b026092ab3f50c534e"),
    ("LICENSE",
     "c71d239df91726fc519c6eb72d318ec65820627232b2f796219e87dcf35d0ab4"),
]


def main() -> None:
    p = _fetch.parser(__doc__.splitlines()[0], out_default="data/official", base_default=BASE_URL)
    p.add_argument("--checksums", metavar="FILE",
                   help="sha256sum-style manifest ('<sha256>  <relative path>' per line) replacing the "
                        "built-in file list")
    p.add_argument("--list", action="store_true", help="print URL, sha256 and target of each file, fetch nothing")
    args = p.parse_args()
    files = _fetch.read_checksums(args.checksums) if args.checksums else FILES
    out = Path(args.out)
    if args.list:
        for rel, sha in files:
            print(f"{_fetch.join_url(args.base_url, rel)}  sha256={sha}  ->  {out / rel}")
        return
    manual = (f"Offline? Download the files that 'get_official.py --list --out {out}' prints, by hand, "
              f"to the paths it shows, then re-run this command to verify them.")
    for rel, sha in files:
        _fetch.download(_fetch.join_url(args.base_url, rel), out / rel, sha, manual=manual,
                        read_timeout=args.timeout)
    print(f"all {len(files)} files verified under {out}")


if __name__ == "__main__":
    _fetch.run(main)
