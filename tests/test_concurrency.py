"""Many at once: threads and processes coding the same images and files at the same time.

Whatever runs beside it, a coding gives the bytes and pixels of a single run: one codec shared
by threads (its fixed-point copies in ``lic.codecs.exact.CACHE`` built by them concurrently,
CompressAI's coder objects shared), codecs loaded per thread, ``lic encode`` / ``lic decode``
processes started together. Files are written through a temporary file and a rename
(:func:`lic.files.atomic_output`), so processes writing one path leave one complete result and
no temporary file, and a reader of a path being rewritten sees the old file or the new one,
never a mix.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch
from PIL import Image

import lic
from lic import coding, pretrained
from lic.checkpoint import warm_start
from lic.codecs import exact as fx
from lic.demo import SAMPLES_DIR
from lic.imageio import load_image, tensor_to_pixels
from tests.helpers import default_coding_quality, shipped_points

THREADS = 4
#: Subprocesses use one thread each: the tests start several at once on a small machine.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
TIMEOUT = 300


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """References and in-process runs on one torch thread, as the subprocesses: oneDNN may pick
    another convolution algorithm for another thread count, and the synthesis's float32 pixels
    can then differ by one level (README, "Deterministic decoding")."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def photos() -> dict[str, Path]:
    """The Kodak crops shipped with lic (256x192 and 192x256), by name."""
    paths = sorted(SAMPLES_DIR.glob("*.png"))
    assert len(paths) >= 3
    return {path.stem: path for path in paths[:3]}


@pytest.fixture(scope="module")
def images(photos: dict[str, Path]) -> dict[str, torch.Tensor]:
    return {name: load_image(path).to_tensor() for name, path in photos.items()}


class SingleRun(NamedTuple):
    """What coding one photo alone gives: the ``.lic`` bytes, the decoded pixels and PNG."""

    data: bytes
    pixels: np.ndarray
    png: bytes = b""


@pytest.fixture(scope="module")
def reference(photos, tmp_path_factory) -> dict[str, SingleRun]:
    """One single-threaded run of the file API per photo (``lic encode`` / ``lic decode``)."""
    folder = tmp_path_factory.mktemp("reference")
    result = {}
    for name, path in photos.items():
        coding.encode_file(path, folder / f"{name}.lic")
        coding.decode_file(folder / f"{name}.lic", folder / f"{name}.png", checkpoint=None)
        png = folder / f"{name}.png"
        result[name] = SingleRun(
            (folder / f"{name}.lic").read_bytes(), _pixels(png), png.read_bytes()
        )
    return result


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _code(codec: torch.nn.Module, image: torch.Tensor, quality: float | None = None) -> SingleRun:
    data = coding.encode(codec, image, quality)
    return SingleRun(data, tensor_to_pixels(coding.decode(codec, data)))


def _together(work, jobs_per_thread: list[list]) -> list[list]:
    """``work(jobs)`` in one thread per list of jobs, all threads released at once."""
    barrier = threading.Barrier(len(jobs_per_thread))

    def thread(jobs: list) -> list:
        barrier.wait()
        return work(jobs)

    with ThreadPoolExecutor(len(jobs_per_thread)) as pool:
        return list(pool.map(thread, jobs_per_thread))


def _assert_same(got: SingleRun, expected: SingleRun, what: str) -> None:
    assert got.data == expected.data, f"{what}: bitstream differs from the single-threaded run"
    assert np.array_equal(got.pixels, expected.pixels), f"{what}: pixels differ from the single run"


def test_threads_sharing_one_codec_code_as_one_thread_does(images, reference) -> None:
    codec = lic.load_codec(pretrained.default_checkpoint())
    quality = default_coding_quality()  # as the reference: `lic encode` without --quality
    fx.CACHE.clear()  # the threads build the fixed-point copies, concurrently
    names = sorted(images)
    # Every thread codes every photo, twice, in its own order: the same image is coded by
    # several threads at once, and different ones are too.
    rng = random.Random(0)
    jobs = [rng.sample(names * 2, 2 * len(names)) for _ in range(THREADS)]
    results = _together(lambda batch: [(n, _code(codec, images[n], quality)) for n in batch], jobs)
    for thread, done in enumerate(results):
        assert len(done) == 2 * len(names)
        for name, got in done:
            _assert_same(got, reference[name], f"thread {thread}, {name}")


def test_threads_with_their_own_codecs_code_as_one_thread_does(images) -> None:
    # Two threads load the same weights, two others other weights (a fixed-rate default) or
    # the same weights to code at other qualities (a variable-rate default).
    qualities = [3, 3, 1, 4]
    points = {p.quality: p for p in shipped_points() if p.quality in qualities}
    expected = {}
    for quality, point in points.items():
        codec = lic.load_codec(point.path)
        expected.update(
            {(quality, n): _code(codec, image, point.coding_quality) for n, image in images.items()}
        )
    fx.CACHE.clear()

    def load_and_code(jobs: list[tuple[int, str]]) -> list:
        point = points[jobs[0][0]]
        codec = lic.load_codec(point.path)  # loaded in the thread, beside others
        return [(job, _code(codec, images[job[1]], point.coding_quality)) for job in jobs]

    jobs = [[(quality, name) for name in sorted(images)] for quality in qualities]
    results = _together(load_and_code, jobs)
    for done in results:
        for (quality, name), got in done:
            _assert_same(got, expected[quality, name], f"quality {quality}, {name}")


def test_threads_sharing_a_variable_rate_codec_at_different_qualities(images, tmp_path) -> None:
    """One variable-rate codec coding at several qualities at once (its gains are per call):
    the default codec if it is variable-rate, else one started from its quality-3 student."""
    if pretrained.is_variable_rate():
        codec = lic.load_codec(pretrained.default_checkpoint())
    else:
        codec = warm_start(lic.create_codec("student-small-vr"), pretrained.default_checkpoint(3))
        lic.save_codec(codec, tmp_path / "vr.ckpt", metric="mse")
        codec = lic.load_codec(tmp_path / "vr.ckpt")
    name = min(images)
    qualities = [1.0, 2.5, 4.7, 8.0]
    expected = {q: _code(codec, images[name], q) for q in qualities}
    assert len({run.data for run in expected.values()}) == len(qualities)
    fx.CACHE.clear()
    jobs = [qualities[i:] + qualities[:i] for i in range(THREADS)]
    results = _together(lambda qs: [(q, _code(codec, images[name], q)) for q in qs], jobs)
    for thread, done in enumerate(results):
        for quality, got in done:
            _assert_same(got, expected[quality], f"thread {thread}, quality {quality}")


def _lic_command() -> str:
    exe = shutil.which("lic", path=str(Path(sys.executable).parent))
    assert exe, "the `lic` console script is not installed beside this Python"
    return exe


def _start(*argv: str | Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(a) for a in argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )


def _finish(processes: list[subprocess.Popen[str]]) -> None:
    for process in processes:
        _, err = process.communicate(timeout=TIMEOUT)
        assert process.returncode == 0, f"{process.args}: exit {process.returncode}\n{err}"
        assert "Traceback" not in err


def _watch(
    processes: list[subprocess.Popen[str]], watched: dict[Path, dict[bytes, str]]
) -> list[tuple[Path, str]]:
    """Read the ``watched`` files every millisecond until ``processes`` end, then finish them.

    Whenever a watched path exists it must hold one of its complete files (the bytes of a
    single run, keys of ``watched[path]``), never a mix or a part. Returns every read as
    ``(path, name of the file read)``.
    """
    reads: list[tuple[Path, str]] = []
    deadline = time.monotonic() + TIMEOUT
    try:
        while any(process.poll() is None for process in processes):
            assert time.monotonic() < deadline, "the processes did not finish"
            for path, valid in watched.items():
                try:
                    data = path.read_bytes()
                except FileNotFoundError:
                    continue
                name = valid.get(data)
                assert name, f"read {len(reads) + 1}: {path.name} holds {len(data)} bytes, no file"
                reads.append((path, name))
            time.sleep(0.001)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    _finish(processes)
    return reads


def test_cli_processes_at_once_write_what_a_single_run_writes(photos, reference, tmp_path):
    """``lic encode`` and ``lic decode`` started together, to their own outputs and to one.

    (Processes encoding to one ``.lic`` path are the writers of the next test.)
    """
    lic_exe = _lic_command()
    a, b, c = sorted(photos)[:3]
    own, same = tmp_path / "own", tmp_path / "same"
    own.mkdir()
    same.mkdir()
    for name in (b, c):  # inputs of the decodes
        (tmp_path / f"{name}.lic").write_bytes(reference[name].data)
    # Every process is started before any is waited for.
    processes = [
        _start(lic_exe, "encode", photos[a], "-o", own / f"{a}.lic"),
        _start(lic_exe, "decode", tmp_path / f"{b}.lic", "-o", own / f"{b}.png"),
        _start(lic_exe, "decode", tmp_path / f"{b}.lic", "-o", same / "x.png"),
        _start(lic_exe, "decode", tmp_path / f"{c}.lic", "-o", same / "x.png"),
    ]
    watched = {
        own / f"{a}.lic": {reference[a].data: a},
        own / f"{b}.png": {reference[b].png: b},
        same / "x.png": {reference[b].png: b, reference[c].png: c},
    }
    _watch(processes, watched)  # no output is ever seen incomplete
    # Different outputs: each is the single run's.
    assert (own / f"{a}.lic").read_bytes() == reference[a].data
    assert np.array_equal(_pixels(own / f"{b}.png"), reference[b].pixels)
    # One output for both: one complete result, never a mix, and no temporary file left.
    decoded = _pixels(same / "x.png")
    assert any(np.array_equal(decoded, reference[n].pixels) for n in (b, c))
    assert sorted(p.name for p in own.iterdir()) == [f"{a}.lic", f"{b}.png"]
    assert sorted(p.name for p in same.iterdir()) == ["x.png"]


#: ``lic encode`` in a loop in one process (saves starting Python for every write).
WRITER = """
import sys, time
from pathlib import Path
from lic.cli import main
output, ready, done, rounds, *sources = sys.argv[1:]
while not Path(ready).exists():
    time.sleep(0.01)
for i in range(int(rounds)):
    if main(["encode", sources[i % len(sources)], "-o", output]) != 0:
        sys.exit(1)
Path(done).touch()
"""

#: ``lic decode`` in a loop until every writer is done, each decode to its own PNG.
READER = """
import sys
from pathlib import Path
from lic.cli import main
source, folder, ready, *done = sys.argv[1:]
Path(ready).touch()
i = 0
while True:
    finished = all(Path(d).exists() for d in done)
    if main(["decode", source, "-o", f"{folder}/{i:03d}.png"]) != 0:
        sys.exit(1)
    i += 1
    if finished:
        break
"""


def test_readers_see_a_whole_file_while_writers_replace_it(photos, reference, tmp_path):
    """``lic decode`` of a path that two ``lic encode`` loops keep rewriting, and a poller
    reading its bytes meanwhile: every read is one of the complete files a single run writes."""
    a, b = sorted(photos)[:2]
    shared, decoded = tmp_path / "shared", tmp_path / "decoded"
    shared.mkdir()
    decoded.mkdir()
    target, ready = shared / "x.lic", tmp_path / "reader.ready"
    target.write_bytes(reference[a].data)
    done = [tmp_path / "writer0.done", tmp_path / "writer1.done"]
    rounds = "6"
    processes = [
        _start(sys.executable, "-c", WRITER, target, ready, done[0], rounds, photos[a], photos[b]),
        _start(sys.executable, "-c", WRITER, target, ready, done[1], rounds, photos[b], photos[a]),
        _start(sys.executable, "-c", READER, target, decoded, ready, *done),
    ]
    valid = {reference[a].data: a, reference[b].data: b}
    reads = [name for _, name in _watch(processes, {target: valid})]
    changes = sum(x != y for x, y in pairwise(reads))
    assert changes >= 2, f"no race exercised: {len(reads)} reads, {changes} changes"
    outputs = sorted(decoded.iterdir())
    assert len(outputs) >= 2
    for path in outputs:
        pixels = _pixels(path)
        assert any(np.array_equal(pixels, reference[n].pixels) for n in (a, b)), path.name
    # The writers' last files: one complete result, and no temporary file left.
    assert target.read_bytes() in valid
    assert sorted(p.name for p in shared.iterdir()) == ["x.lic"]
