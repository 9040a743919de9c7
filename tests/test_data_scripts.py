"""data_scripts: downloads from a local HTTP server (loopback only), checksums, resume, offline errors,
and conversion of fixtures in the real dataset layouts into what drdm.data reads."""
import functools
import hashlib
import http.server
import re
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from drdm import data, shared

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "data_scripts"
OFFICIAL = shared.official_dir()   # None without the shared data
CLOSED = "http://127.0.0.1:9/"                 # discard port: nothing listens there


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files from a folder, honouring ``Range: bytes=N-`` (the stdlib handler ignores Range)."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.requests.append((self.path, self.headers.get("Range")))
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        body = path.read_bytes()
        m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if m:
            start = int(m.group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            body = body[start:]
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "srv"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_RangeHandler, directory=str(root)))
    httpd.requests = []
    httpd.timeout = 5
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}/", httpd.requests
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


def _run(script, *args, timeout=60):
    t = time.monotonic()
    p = subprocess.run([sys.executable, str(SCRIPTS / script), *map(str, args)], capture_output=True, text=True,
                       timeout=timeout, cwd=ROOT)
    return p, time.monotonic() - t


def _sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _release_fixture(root):
    """A few files in the release's layout, and a manifest with their own checksums."""
    rng = np.random.default_rng(0)
    files = {
        "models/cmr_recresacnet/000000_cmr_recresacnet.pth": rng.integers(0, 256, 300_000, dtype=np.uint8).tobytes(),
        "Config/config_cmr.yaml": b"img_size: 256\nnum_steps: 80\n",
        "Data/Tgt_data/cmr/Tr/patient001_frame01.nii.gz": rng.integers(0, 256, 50_000, dtype=np.uint8).tobytes(),
    }
    for rel, body in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(body)
    manifest = root.parent / "checksums.txt"
    manifest.write_text("".join(f"{hashlib.sha256(b).hexdigest()}  {rel}\n" for rel, b in files.items()))
    return files, manifest


# ---------------------------------------------------------------- get_official.py

def test_official_download_verifies_and_skips_what_is_there(tmp_path, server):
    root, url, requests = server
    files, manifest = _release_fixture(root)
    out = tmp_path / "out"
    p, _ = _run("get_official.py", "--base-url", url, "--out", out, "--checksums", manifest)
    assert p.returncode == 0, p.stderr
    for rel, body in files.items():
        assert (out / rel).read_bytes() == body
    assert not list(out.rglob("*.part"))
    n = len(requests)
    p, _ = _run("get_official.py", "--base-url", url, "--out", out, "--checksums", manifest)
    assert p.returncode == 0 and "already there" in p.stdout
    assert len(requests) == n                                 # nothing fetched again


def test_official_resumes_a_partial_download(tmp_path, server):
    root, url, requests = server
    files, manifest = _release_fixture(root)
    rel = "models/cmr_recresacnet/000000_cmr_recresacnet.pth"
    out = tmp_path / "out"
    part = out / (rel + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(files[rel][:123_456])
    p, _ = _run("get_official.py", "--base-url", url, "--out", out, "--checksums", manifest)
    assert p.returncode == 0, p.stderr
    assert ("/" + rel, "bytes=123456-") in requests              # only the rest was asked for
    assert (out / rel).read_bytes() == files[rel] and not part.exists()
    assert "resumed" in p.stdout


def test_official_refuses_a_wrong_checksum(tmp_path, server):
    root, url, _ = server
    files, manifest = _release_fixture(root)
    rel = "Config/config_cmr.yaml"
    bad = tmp_path / "bad.txt"
    bad.write_text(f"{'0' * 64}  {rel}\n")
    out = tmp_path / "out"
    p, _ = _run("get_official.py", "--base-url", url, "--out", out, "--checksums", bad)
    assert p.returncode == 2
    assert len(p.stderr.strip().splitlines()) == 1 and "sha256 mismatch" in p.stderr and url in p.stderr
    assert not (out / rel).exists() and not (out / (rel + ".part")).exists()


def test_official_table_matches_the_reference_copy():
    if OFFICIAL is None:
        pytest.skip(shared.absent_reason("the release's reference files"))
    sys.path.insert(0, str(SCRIPTS))
    try:
        import get_official
    finally:
        sys.path.remove(str(SCRIPTS))
    assert get_official.COMMIT == "1c70370f0e0159161daae726d96d6cf975cac5ef"
    assert get_official.BASE_URL.startswith("https://raw.githubusercontent.com/jianqingzheng/def_diff_rec/")
    for rel, sha in get_official.FILES:
        assert _sha(OFFICIAL / rel) == sha, rel


@pytest.mark.parametrize("script", ["get_official.py", "get_acdc.py", "get_mnms.py", "get_learn2reg.py"])
def test_unreachable_url_fails_fast_with_one_line(tmp_path, script):
    out = tmp_path / "out"
    p, seconds = _run(script, "--base-url", CLOSED, "--out", out, timeout=30)
    assert p.returncode == 2
    assert seconds < 10
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and CLOSED in lines[0] and "by hand" in lines[0], p.stderr
    assert not out.exists() or not any(out.rglob("*"))        # no empty folders or partial files


@pytest.mark.parametrize("script", ["get_acdc.py", "get_mnms.py", "get_learn2reg.py"])
def test_registration_datasets_print_manual_steps(tmp_path, script):
    p, seconds = _run(script, "--out", tmp_path / "out", timeout=30)
    assert p.returncode == 2 and seconds < 10
    assert "https://" in p.stderr and "--zip" in p.stderr


# ---------------------------------------------------------------- conversions

def _nii(path, array, affine=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(array), np.diag([1.5, 1.5, 10.0, 1.0]) if affine is None else affine),
             str(path))


def _label(shape, seed, lv=1, rv=3):
    """Label map with a myocardium ring (2) around cavity ``lv`` and a blob ``rv``."""
    x, y = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    r = np.hypot(x - shape[0] * 0.6, y - shape[1] / 2)
    sl = np.zeros(shape[:2], np.uint8)
    sl[np.hypot(x - shape[0] * 0.2, y - shape[1] / 2) < 4] = rv
    sl[r < 6 + seed % 2] = 2
    sl[r < 4 + seed % 2] = lv
    return np.repeat(sl[..., None], shape[2], axis=2)


def test_acdc_zip_from_a_mirror_is_converted(tmp_path, server):
    root, url, _ = server
    staging = tmp_path / "staging"
    for i in (1, 2):
        d = staging / "ACDC" / "database" / ("training" if i == 1 else "testing") / f"patient{i:03d}"
        d.mkdir(parents=True)
        (d / "Info.cfg").write_text(f"ED: 1\nES: {9 + i}\nGroup: DCM\nNbFrame: 20\n")
        for frame in (1, 9 + i):
            lab = _label((24, 20, 4), frame, lv=3, rv=1)
            _nii(d / f"patient{i:03d}_frame{frame:02d}.nii.gz", (lab * 50 + 10).astype(np.int16))
            _nii(d / f"patient{i:03d}_frame{frame:02d}_gt.nii.gz", lab)
        _nii(d / f"patient{i:03d}_4d.nii.gz", np.zeros((4, 4, 2, 3), np.int16))
    with zipfile.ZipFile(root / "ACDC.zip", "w") as z:
        for f in sorted(staging.rglob("*")):
            if f.is_file():
                z.write(f, f.relative_to(staging).as_posix())
    out = tmp_path / "acdc"
    p, _ = _run("get_acdc.py", "--base-url", url, "--out", out, "--sha256", _sha(root / "ACDC.zip"))
    assert p.returncode == 0, p.stderr
    assert (out / "training" / "patient001" / "Info.cfg").is_file()
    assert not (out / "training" / "patient001" / "patient001_4d.nii.gz").exists()
    recs = data.load_acdc(out)
    assert [(r.subject, r.phase, r.meta["frame"]) for r in recs] == [
        ("patient001", "ED", 1), ("patient001", "ES", 10), ("patient002", "ED", 1), ("patient002", "ES", 11)]
    assert recs[0].spacing == pytest.approx((1.5, 1.5, 10.0))
    assert (out / "SHA256SUMS").read_text().count("\n") == 10
    # the same from the unpacked folder: identical files are left alone
    p, _ = _run("get_acdc.py", "--from-dir", staging / "ACDC" / "database", "--out", out)
    assert p.returncode == 0, p.stderr


def test_mnms_official_4d_layout_is_cut_to_ed_es(tmp_path):
    src = tmp_path / "OpenDataset"
    shape, T = (20, 18, 3), 6
    info = ["External code,VendorName,Vendor,Centre,ED,ES"]
    for code, vendor, ed, es in (("A0B1C2", "A", 0, 3), ("D3E4F5", "B", 2, 5)):
        d = src / "Training" / "Labeled" / code
        gt = np.zeros((*shape, T), np.uint8)
        gt[..., ed] = _label(shape, 0)                          # M&Ms order: 1 LV, 3 RV
        gt[..., es] = _label(shape, 1)
        img = np.random.default_rng(ed).normal(100, 10, (*shape, T)).astype(np.float32)
        _nii(d / f"{code}_sa.nii.gz", img)
        _nii(d / f"{code}_sa_gt.nii.gz", gt)
        info.append(f"{code},Vendor{vendor},{vendor},1,{ed},{es}")
    _nii(src / "Training" / "Unlabeled" / "Z9Z9Z9" / "Z9Z9Z9_sa.nii.gz", np.zeros((*shape, T), np.float32))
    (src / "211230_M&Ms_Dataset_information_diagnosis_opendataset.csv").write_text("\n".join(info) + "\n")
    out = tmp_path / "mnms"
    p, _ = _run("get_mnms.py", "--from-dir", src, "--out", out)
    assert p.returncode == 0, p.stderr
    assert (out / "A" / "ED_A0B1C2_sa.nii.gz").is_file() and (out / "LABEL_B" / "ES_D3E4F5_sa_gt.nii.gz").is_file()
    recs = data.load_mnms(out)
    assert sorted((r.subject, r.phase) for r in recs) == [("A0B1C2", "ED"), ("A0B1C2", "ES"),
                                                          ("D3E4F5", "ED"), ("D3E4F5", "ES")]
    for r in recs:
        np.testing.assert_array_equal(r.label, data.MNMS_TO_ACDC[_label(shape, r.phase == "ES")])
        assert r.spacing == pytest.approx((1.5, 1.5, 10.0))     # the true spacing is kept


def test_learn2reg_zip_is_laid_out(tmp_path, server):
    root, url, _ = server
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(root / "LungCT.zip", "w") as z:
        for case in (1, 2):
            for phase in ("exp", "insp"):
                for folder, arr in (("imagesTr", rng.normal(-600, 50, (16, 14, 12)).astype(np.float32)),
                                    ("masksTr", (rng.random((16, 14, 12)) > 0.5).astype(np.uint8))):
                    f = tmp_path / "tmp.nii.gz"
                    _nii(f, arr, np.diag([1.75, 1.75, 1.75, 1.0]))
                    z.write(f, f"LungCT/{folder}/case_{case:03d}_{phase}.nii.gz")
        z.writestr("LungCT/keypointsTr/case_001_exp.csv", "1,2,3\n")
        z.writestr("../evil/case_001_exp.nii.gz", b"not allowed out")
    out = tmp_path / "l2r"
    p, _ = _run("get_learn2reg.py", "--base-url", url, "--out", out)
    assert p.returncode == 0, p.stderr
    recs = data.load_learn2reg_lung(out)
    assert [(r.subject, r.phase) for r in recs] == [("case_001", "exp"), ("case_001", "insp"),
                                                    ("case_002", "exp"), ("case_002", "insp")]
    assert (out / "keypointsTr" / "case_001_exp.csv").is_file()
    assert not (tmp_path / "evil").exists()


def test_mnms_3d_subset_is_verified_against_its_manifest(tmp_path):
    mnms = shared.mnms_dir()
    if mnms is None:
        pytest.skip(shared.absent_reason("M&Ms development subset"))
    out = tmp_path / "copy"
    p, _ = _run("get_mnms.py", "--from-dir", mnms, "--out", out)
    assert p.returncode == 0, p.stderr
    assert len(data.load_mnms(out)) == 40
    # a file that does not match MANIFEST.csv is refused
    fake = tmp_path / "fake"
    lab = _label((12, 10, 3), 0)
    _nii(fake / "A" / "ED_X1Y2Z3_sa.nii.gz", lab.astype(np.float32))
    _nii(fake / "LABEL_A" / "ED_X1Y2Z3_sa_gt.nii.gz", lab)
    (fake / "MANIFEST.csv").write_text("local,sha256\nA/ED_X1Y2Z3_sa.nii.gz," + "0" * 64 + "\n")
    p, _ = _run("get_mnms.py", "--from-dir", fake, "--out", tmp_path / "out2")
    assert p.returncode == 2 and "sha256 differs" in p.stderr and "ED_X1Y2Z3_sa.nii.gz" in p.stderr
    assert not (tmp_path / "out2" / "A" / "ED_X1Y2Z3_sa.nii.gz").exists()
