"""`python tools/download.py` against local archives (file:// and a local HTTP server), never the internet."""
import http.server
import shutil
import sys
import tarfile
import threading
import zipfile

import pytest
from conftest import FIX, ROOT

import common

sys.path.insert(0, str(ROOT / "tools"))
import download  # noqa: E402


def test_download_zip_from_file_url(tmp_path, capsys):
    archive = tmp_path / "mtop.zip"
    with zipfile.ZipFile(archive, "w") as z:  # the official zip has a top-level mtop/ folder
        for f in (FIX / "mtop").rglob("*.txt"):
            z.write(f, "mtop/" + f.relative_to(FIX / "mtop").as_posix())
    dest = tmp_path / "data/mtop"
    download.main(["mtop", "--dest", str(dest), "--url", archive.as_uri()])
    assert (dest / "en/train.txt").is_file() and (dest / "de/eval.txt").is_file()
    assert common.load_split("mtop", dest, "de", "test") == common.load_split("mtop", FIX / "mtop", "de", "test")
    out = capsys.readouterr().out
    assert "downloading file://" in out and "100.0%" in out and f"mtop is in {dest}" in out
    assert sorted(p.name for p in dest.parent.iterdir()) == ["mtop"]  # temporary files are gone


def test_download_tar_gz_over_http(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    with tarfile.open(served / "amazon-massive-dataset-1.0.tar.gz", "w:gz") as t:
        t.add(FIX / "massive/data", "1.0/data")  # the official tarball unpacks to 1.0/data/<locale>.jsonl
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(served))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/amazon-massive-dataset-1.0.tar.gz"
        dest = download.download("massive", tmp_path / "massive", [url])
    finally:
        server.shutdown()
    assert common.languages("massive", dest) == ["de"]
    assert len(common.load_split("massive", dest, "en", "train")) == 3


def test_download_errors_are_clear(tmp_path):
    with pytest.raises(SystemExit, match="could not download mtod"):
        download.main(["mtod", "--dest", str(tmp_path / "m"), "--url", (tmp_path / "none.zip").as_uri()])
    wrong = tmp_path / "wrong.zip"
    with zipfile.ZipFile(wrong, "w") as z:
        z.writestr("readme.txt", "not a dataset")
    with pytest.raises(SystemExit, match="has no en/train-en.conllu"):
        download.download("mtod", tmp_path / "m", [wrong.as_uri()])
    shutil.rmtree(tmp_path / "m", ignore_errors=True)
