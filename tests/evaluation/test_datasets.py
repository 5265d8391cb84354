"""Dataset downloads against a real HTTP server on loopback: resume, checksums, atomicity."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import threading
import zipfile
from typing import ClassVar

import numpy as np
import pytest
from PIL import Image

from lic.cli import main
from lic.evaluation import datasets
from lic.evaluation.datasets import (
    CATALOG,
    DatasetSpec,
    DownloadError,
    RemoteFile,
    download,
    verify,
)
from lic.files import list_images


class _Handler(http.server.BaseHTTPRequestHandler):
    # Shared by every request of the loopback server (class state on purpose).
    files: ClassVar[dict[str, bytes]] = {}
    cut_after: ClassVar[dict[str, int]] = {}  # path -> bytes served before dropping, once
    requests: ClassVar[list[tuple[str, str | None]]] = []

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        data = self.files.get(self.path)
        self.requests.append((self.path, self.headers.get("Range")))
        if data is None:
            self.send_error(404)
            return
        start = 0
        if self.headers.get("Range"):
            start = int(self.headers["Range"].split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = self.cut_after.pop(self.path, None)
        self.wfile.write(body if cut is None else body[:cut])
        if cut is not None:
            self.wfile.flush()
            self.connection.close()


@pytest.fixture()
def server():
    _Handler.files, _Handler.cut_after, _Handler.requests = {}, {}, []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", _Handler
    httpd.shutdown()
    httpd.server_close()


def _png(seed: int, size=(48, 32)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _archive(count: int, folder: str = "set/images") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for i in range(count):
            zf.writestr(f"{folder}/img{i}.png", _png(i))
        zf.writestr("set/README.txt", "not an image")
    return buffer.getvalue()


def _files_spec(base: str, count: int = 3) -> tuple[DatasetSpec, dict[str, bytes]]:
    blobs = {f"/img{i}.png": _png(i) for i in range(count)}
    files = tuple(
        RemoteFile(base + path, path[1:], len(b), hashlib.sha256(b).hexdigest())
        for path, b in blobs.items()
    )
    spec = DatasetSpec(
        "toy", "toy", files, count, image_size=(48, 32), images={f.name: f.sha256 for f in files}
    )
    return spec, blobs


def test_catalog_lists_the_standard_sets() -> None:
    assert {"kodak", "tecnick", "clic2020-professional-valid", "clic2022-test"} <= set(CATALOG)
    kodak = CATALOG["kodak"]
    assert kodak.count == 24 and len(kodak.files) == 24 and all(f.sha256 for f in kodak.files)
    assert CATALOG["tecnick"].count == 100 and CATALOG["clic2020-professional-valid"].count == 41


def test_shared_kodak_matches_the_catalog(kodak_dir) -> None:
    assert verify(CATALOG["kodak"], kodak_dir) == []


def test_files_download_and_verify(server, tmp_path) -> None:
    base, handler = server
    spec, blobs = _files_spec(base)
    handler.files.update(blobs)
    folder = download(spec, tmp_path)
    assert sorted(p.name for p in list_images(folder)) == ["img0.png", "img1.png", "img2.png"]
    assert (folder / datasets.MARKER).is_file() and verify(spec, folder) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy"]  # no leftovers
    (folder / "img1.png").write_bytes(_png(99))
    assert any("sha256 mismatch" in p for p in verify(spec, folder))


def test_interrupted_download_resumes_with_a_range_request(server, tmp_path) -> None:
    base, handler = server
    spec, blobs = _files_spec(base, count=1)
    handler.files.update(blobs)
    handler.cut_after["/img0.png"] = 100
    with pytest.raises(DownloadError, match="run again to resume"):
        download(spec, tmp_path)
    assert not (tmp_path / "toy").exists()
    part = tmp_path / ".toy.downloads" / "img0.png.part"
    assert part.stat().st_size == 100
    download(spec, tmp_path)
    assert ("/img0.png", "bytes=100-") in handler.requests
    assert verify(spec, tmp_path / "toy") == []


def test_tampered_download_leaves_nothing_complete(server, tmp_path) -> None:
    base, handler = server
    spec, blobs = _files_spec(base, count=2)
    handler.files.update(blobs)
    tampered = bytearray(blobs["/img1.png"])
    tampered[-20] ^= 0xFF
    handler.files["/img1.png"] = bytes(tampered)
    with pytest.raises(DownloadError, match="does not match"):
        download(spec, tmp_path)
    assert not (tmp_path / "toy").exists()
    assert not list(tmp_path.rglob("img1.png*"))


def test_archive_download_extracts_atomically_and_counts(server, tmp_path) -> None:
    base, handler = server
    handler.files["/set.zip"] = _archive(4)
    spec = DatasetSpec(
        "zipped", "zipped", (RemoteFile(base + "/set.zip", "set.zip"),), 4, archive_members="images"
    )
    folder = download(spec, tmp_path)
    assert len(list_images(folder)) == 4 and verify(spec, folder) == []
    short = DatasetSpec(
        "short", "short", (RemoteFile(base + "/set.zip", "set.zip"),), 5, archive_members="images"
    )
    with pytest.raises(DownloadError, match="4 images, expected 5"):
        download(short, tmp_path)
    assert not (tmp_path / "short").exists()
    handler.files["/bad.zip"] = b"PK not really a zip"
    bad = DatasetSpec(
        "bad", "bad", (RemoteFile(base + "/bad.zip", "bad.zip"),), 1, archive_members=""
    )
    with pytest.raises(DownloadError, match="not a valid zip"):
        download(bad, tmp_path)
    assert not (tmp_path / "bad").exists()


def test_cli_download_list_verify_with_a_catalog_file(server, tmp_path, capsys) -> None:
    base, handler = server
    spec, blobs = _files_spec(base)
    handler.files.update(blobs)
    catalog = tmp_path / "catalog.json"
    catalog.write_text(
        json.dumps(
            {
                "toy": {
                    "description": "toy set",
                    "count": 3,
                    "image_size": [48, 32],
                    "files": [
                        {"url": f.url, "name": f.name, "size": f.size, "sha256": f.sha256}
                        for f in spec.files
                    ],
                }
            }
        )
    )
    root = tmp_path / "data"
    args = ["--root", str(root), "--catalog", str(catalog)]
    assert main(["datasets", "download", "toy", *args]) == 0
    assert main(["datasets", "verify", "toy", *args]) == 0
    assert main(["datasets", "list", *args]) == 0
    out = capsys.readouterr().out
    assert "all checks passed" in out and "installed" in out and "kodak" in out
    (root / "toy" / "img0.png").unlink()
    assert main(["datasets", "verify", "toy", *args]) == 1
    assert "2 images, expected 3" in capsys.readouterr().err
    handler.files.clear()
    (root / "toy").rename(root / "old")
    assert main(["datasets", "download", "toy", *args]) == 1  # the server lost the files: 404
    err = capsys.readouterr().err
    assert err.startswith("lic: error: ") and err.count("\n") == 1 and "HTTP 404" in err
    assert main(["datasets", "download", "nope", *args]) == 2
