"""Fetch a freely downloadable dataset's official archive(s) and unpack it in its official layout.

    python tools/download.py mtop                  # into data/mtop, where the method files look by default
    python tools/download.py massive --dest /data/massive
    python tools/download.py mtod --url file:///mirror/mtod.zip   # a mirror or a local copy

The archives and the file that marks each dataset's root inside them are `common.DOWNLOADS`.
"""
import argparse
import shutil
import sys
import tarfile
import time
import urllib.request
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import DOWNLOADS  # noqa: E402


def download(name, dest=None, urls=None):
    """Fetch the official archive(s) of `name`, unpack, and move the dataset root to `dest`
    (default data/<name>) so the loaders find their official layout there."""
    dest = Path(dest or Path("data") / name)
    tmp = dest.parent / f".{name}.download"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        for (url, marker), override in zip(DOWNLOADS[name], urls or [None] * len(DOWNLOADS[name])):
            url = override or url
            archive = tmp / url.rstrip("/").split("/")[-1]
            print(f"downloading {url}", flush=True)
            with urllib.request.urlopen(url) as r, open(archive, "wb") as f:
                total, done, last = int(r.headers.get("Content-Length") or 0), 0, 0.0
                while chunk := r.read(1 << 20):
                    f.write(chunk)
                    done += len(chunk)
                    if time.time() - last > 2 or done == total:
                        last = time.time()
                        pct = f" {100 * done / total:5.1f}%" if total else ""
                        print(f"  {done / 2**20:8.1f} MiB{pct}", flush=True)
            unpacked = tmp / "unpacked"
            print(f"unpacking {archive.name}", flush=True)
            if zipfile.is_zipfile(archive):
                with zipfile.ZipFile(archive) as z:
                    z.extractall(unpacked)
            else:
                with tarfile.open(archive) as t:
                    t.extractall(unpacked, filter="data")
            hits = sorted(unpacked.rglob(marker.split("/")[-1]), key=lambda p: len(p.parts))
            roots = [h.parents[marker.count("/")] for h in hits if h.as_posix().endswith(marker)]
            if not roots:
                raise SystemExit(f"error: {url}: the archive has no {marker}; is this the official release?")
            dest.mkdir(parents=True, exist_ok=True)
            for item in roots[0].iterdir():
                target = dest / item.name
                if target.exists():
                    shutil.rmtree(target) if target.is_dir() else target.unlink()
                shutil.move(str(item), target)
            shutil.rmtree(unpacked)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{name} is in {dest}", flush=True)
    return dest


def main(argv=None):
    d = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    d.add_argument("name", choices=sorted(DOWNLOADS))
    d.add_argument("--dest", default=None, help="target folder (default data/<name>)")
    d.add_argument("--url", action="append", default=None, help="use this URL instead of the official one "
                   "(a mirror or a local file:// copy); give it once per archive of the dataset")
    a = d.parse_args(argv)
    try:
        download(a.name, a.dest, a.url)
    except (OSError, tarfile.TarError, zipfile.BadZipFile) as e:  # URLError is an OSError
        raise SystemExit(f"error: could not download {a.name}: {e}") from None


if __name__ == "__main__":
    main()
