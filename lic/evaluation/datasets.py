"""The standard test sets: where they come from, what they contain, and a safe downloader.

``lic datasets list|download|verify NAME --root DIR``. Downloads stream into ``NAME.part``
files beside the target (resumed with HTTP ``Range`` requests after an interruption), are
checked against their sha256 where it is known, and are unpacked into a temporary folder that
is renamed into place only when everything checked out; a ``.lic-dataset.json`` written last
marks a complete dataset. A failed or tampered download leaves nothing that looks complete.

Any folder of images can stand in for a dataset wherever one is expected.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm import tqdm

from lic.errors import LicError, UsageError
from lic.files import IMAGE_SUFFIXES, list_images

MARKER = ".lic-dataset.json"
CHUNK = 1 << 16

# Kodak's sums: the shared copy's MANIFEST.tsv, cross-checked there against two repositories.
KODAK_FILES = (
    ("kodim01.png", 736501, "a56e27cbf5f843c048b6af1d6e090760e9c92fadba88b7dee0205918a37523bd"),
    ("kodim02.png", 617995, "4f4b74a79237e311d72cad958237b5f7088d8bce1c82305ebefe1a70e3022dfd"),
    ("kodim03.png", 502888, "e25ca1ff2f0c0cb5fdfd5f9b0a0bb21ac4c3de3c84a67f35b09a85d3306249db"),
    ("kodim04.png", 637432, "e3b946107c5d3441c022f678d0c3caf1e224d81b1604ba840a4f88e562de61aa"),
    ("kodim05.png", 785610, "10349e963c5c813d327852f82c1795fa4148d69fedffc4c589bee458e3ac3d53"),
    ("kodim06.png", 618959, "363510303b715d4cbc384e1ce227e466b613a09e1b71ae985882bf8e7fbd9b18"),
    ("kodim07.png", 566322, "b77d3f006f42414bb242222e0482e750c0fb9e5ee8d4bed2f6f11c5605fe54a4"),
    ("kodim08.png", 788470, "ba23983c76b4832ee0e8af0592664756841a16779acd69f792e268fb6d13d6e7"),
    ("kodim09.png", 582899, "6a4361c2fc194feb4edaa9f9a4a0620fb9943e460ac7fdf037fb0f6dd6607a7d"),
    ("kodim10.png", 593463, "9dfb70f5867c29ff9ed6313683f19b3d867849e40fbc0c4c54a4a89df341cf23"),
    ("kodim11.png", 621023, "7936814b58b5387fce2e4e2488b4ec830dadd95fa9520f358ddb30990b50f2b6"),
    ("kodim12.png", 531024, "d78c37c2f04f23761ed2367dd77e2db584ddd4c3950833fecf89f199a8126980"),
    ("kodim13.png", 822712, "bc34a3ce58dea09dce1704c997171602de90cb34d0c8503a988b77f473d39b08"),
    ("kodim14.png", 692201, "55a94550ff18f3246c4074fd32b77b0c74447c26b6ad274d564d999c0450ba6e"),
    ("kodim15.png", 612582, "7538cbb80cb9103606c48b806eae57d56c885c7f90b9b3be70a41160f9cbb683"),
    ("kodim16.png", 534247, "a89c7268ccd4718ba424a99fc4643c572cf692ca6eae887185ceb4e9f11d2e54"),
    ("kodim17.png", 602078, "37afcc89fbdcb76d9518e04b2fc011027e2f4cd14b3b2f83cefd721641a47c5b"),
    ("kodim18.png", 780947, "1a9258c365988961d87a0598725b609139c303ad48a5aad6c503c3b1a87849aa"),
    ("kodim19.png", 671476, "b7450b264b1b0a411390d8931b112c27905a992520fc90569dc4b920aa32bbdc"),
    ("kodim20.png", 492462, "3b46c71e3b92a563820ba32936be8330c586c41f938efd94be938386aae4328a"),
    ("kodim21.png", 637051, "ac958597c82073f6bb65129c68f72b651db5b9efd82e11547d07350214bc268b"),
    ("kodim22.png", 701970, "1cee58eb1f2d9c7ebb254d208a03c783ce6cf2c4d8c2cf45e235dd23b4ce1b29"),
    ("kodim23.png", 557596, "e3111a2fd4da24af15d6459ef9eacfe54106b38e27b4a21821b75c3f5d2d5baf"),
    ("kodim24.png", 706397, "1071c68372cc5a01435c2c225a5cf7d4bb803846ec08bb6b3d6721b156d7cb96"),
)


@dataclass(frozen=True)
class RemoteFile:
    """One file to fetch: address, name on disk, and size/sha256 where known."""

    url: str
    name: str
    size: int | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset in the catalog.

    Attributes:
        name: catalog name.
        description: what it is and who publishes it.
        files: what to download (images, or one archive).
        archive_members: for an archive, the folder inside it holding the images ("" = all).
        count: expected number of images.
        image_size: the common size, when all images share it (width, height, either order).
        images: per-image sha256 where known, by file name.
        notes: caveats about the source.
    """

    name: str
    description: str
    files: tuple[RemoteFile, ...]
    count: int
    archive_members: str | None = None
    image_size: tuple[int, int] | None = None
    images: dict[str, str] = field(default_factory=dict)
    notes: str = ""

    @property
    def is_archive(self) -> bool:
        return self.archive_members is not None


def _kodak() -> DatasetSpec:
    base = "http://r0k.us/graphics/kodak/kodak/"
    return DatasetSpec(
        name="kodak",
        description="Kodak Lossless True Color Image Suite: 24 PNG, 768x512 (6 portrait)",
        files=tuple(
            RemoteFile(base + name, name, size, digest) for name, size, digest in KODAK_FILES
        ),
        count=24,
        image_size=(768, 512),
        images={name: digest for name, _, digest in KODAK_FILES},
    )


CATALOG: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in [
        _kodak(),
        DatasetSpec(
            name="tecnick",
            description="Tecnick TESTIMAGES, RGB_OR_1200x1200: the 100-image 1200x1200 RGB set of LIC papers",
            files=(
                RemoteFile(
                    "https://sourceforge.net/projects/testimages/files/OLD/OLD_SAMPLING/testimages.zip/download",
                    "testimages.zip",
                ),
            ),
            archive_members="RGB_OR_1200x1200",
            count=100,
            image_size=(1200, 1200),
            notes="archive sha256 not published; the images are counted and size-checked",
        ),
        DatasetSpec(
            name="clic2020-professional-valid",
            description="CLIC 2020 professional validation set: 41 PNG, up to 2048 px",
            files=(
                RemoteFile(
                    "https://data.vision.ee.ethz.ch/cvl/clic/professional_valid_2020.zip",
                    "professional_valid_2020.zip",
                ),
            ),
            archive_members="",
            count=41,
            notes="archive sha256 not published (CompressAI's loader records SHA-1 196a6025...)",
        ),
        DatasetSpec(
            name="clic2022-test",
            description="CLIC 2022 image test set: 30 PNG, up to 2048 px",
            files=(
                RemoteFile(
                    "https://storage.googleapis.com/clic2022_public/test_sets/image_test_30.zip",
                    "image_test_30.zip",
                ),
            ),
            archive_members="",
            count=30,
            notes="address as announced for CLIC 2022; not verified from this machine (no network)",
        ),
    ]
}


class DownloadError(LicError):
    """A download that failed or did not check out."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_catalog(extra: Path | None = None) -> dict[str, DatasetSpec]:
    """The built-in catalog, with entries from a JSON file added or replaced.

    The file holds ``{"NAME": {"description", "files": [{"url", "name", "size"?, "sha256"?}],
    "count", "archive_members"?, "image_size"?, "images"?, "notes"?}}``.
    """
    catalog = dict(CATALOG)
    if extra is None:
        return catalog
    try:
        entries = json.loads(Path(extra).read_text())
        for name, entry in entries.items():
            files = tuple(RemoteFile(**f) for f in entry.pop("files"))
            size = entry.pop("image_size", None)
            catalog[name] = DatasetSpec(
                name=name, files=files, image_size=tuple(size) if size else None, **entry
            )
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise UsageError(f"cannot read catalog {extra}: {exc}") from None
    return catalog


def get_spec(name: str, catalog: dict[str, DatasetSpec]) -> DatasetSpec:
    try:
        return catalog[name]
    except KeyError:
        raise UsageError(f"unknown dataset {name!r}; known: {', '.join(sorted(catalog))}") from None


def _fetch(remote: RemoteFile, destination: Path, timeout: float) -> None:
    """Download ``remote`` to ``destination``, resuming a ``.part`` file, checking size/sha256."""
    part = destination.with_name(destination.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    if remote.size is not None and have > remote.size:
        part.unlink()
        have = 0
    request = urllib.request.Request(
        remote.url, headers={"Range": f"bytes={have}-"} if have else {}
    )
    if not (remote.size is not None and have == remote.size):
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                if have and response.status != 206:  # server ignored the range: start over
                    have = 0
                length = response.headers.get("Content-Length")
                total = have + int(length) if length is not None else remote.size
                with (
                    open(part, "ab" if have else "wb") as handle,
                    tqdm(
                        total=total,
                        initial=have,
                        unit="B",
                        unit_scale=True,
                        desc=remote.name,
                        leave=False,
                    ) as bar,
                ):
                    for chunk in iter(lambda: response.read(CHUNK), b""):
                        handle.write(chunk)
                        bar.update(len(chunk))
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and remote.size is not None and have == remote.size:
                pass  # already complete
            else:
                raise DownloadError(f"{remote.url}: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DownloadError(
                f"{remote.url}: download interrupted ({reason}); run again to resume"
            ) from None
    size = part.stat().st_size
    if remote.size is not None and size != remote.size:
        if size > remote.size:
            part.unlink()
        raise DownloadError(
            f"{remote.name}: got {size} bytes, expected {remote.size}; run again to resume"
        )
    if remote.sha256 is not None:
        actual = sha256_of(part)
        if actual != remote.sha256:
            part.unlink()
            raise DownloadError(
                f"{remote.name}: sha256 {actual[:16]}... does not match {remote.sha256[:16]}...; removed"
            )
    os.replace(part, destination)


def _check_images(spec: DatasetSpec, folder: Path) -> list[str]:
    """Problems with the images in ``folder`` against the spec (empty: all good)."""
    from PIL import Image

    images = list_images(folder)
    problems = []
    if len(images) != spec.count:
        problems.append(f"{len(images)} images, expected {spec.count}")
    for path in images:
        relative = path.relative_to(folder).as_posix()
        expected = spec.images.get(relative) or spec.images.get(path.name)
        if expected is not None and sha256_of(path) != expected:
            problems.append(f"{relative}: sha256 mismatch")
        if spec.image_size is not None:
            try:
                with Image.open(path) as image:
                    size = image.size
            except OSError:
                problems.append(f"{relative}: unreadable")
                continue
            if sorted(size) != sorted(spec.image_size):
                problems.append(
                    f"{relative}: {size[0]}x{size[1]}, expected {spec.image_size[0]}x{spec.image_size[1]}"
                )
    return problems


def _extract(archive: Path, members: str, target: Path) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                parts = Path(info.filename).parts
                if info.is_dir() or Path(info.filename).suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                if ".." in parts or Path(info.filename).is_absolute():
                    raise DownloadError(f"{archive.name}: unsafe path {info.filename!r} in archive")
                if members and members not in parts[:-1]:
                    continue
                with zf.open(info) as source, open(target / parts[-1], "wb") as out:
                    shutil.copyfileobj(source, out)
    except zipfile.BadZipFile:
        raise DownloadError(f"{archive.name}: not a valid zip archive") from None


def download(spec: DatasetSpec, root: Path, timeout: float = 60.0) -> Path:
    """Fetch, check and install ``spec`` under ``root/NAME``; returns that folder."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / spec.name
    if (final / MARKER).is_file():
        return final
    if final.exists():
        raise DownloadError(f"{final} exists but is not a complete download; remove it first")
    downloads = root / f".{spec.name}.downloads"
    downloads.mkdir(exist_ok=True)
    for remote in spec.files:
        target = downloads / remote.name
        if not target.exists():
            _fetch(remote, target, timeout)
    staging = Path(tempfile.mkdtemp(prefix=f".{spec.name}.", dir=root))
    try:
        for remote in spec.files:
            if spec.is_archive:
                _extract(downloads / remote.name, spec.archive_members or "", staging)
            else:
                shutil.copyfile(downloads / remote.name, staging / remote.name)
        problems = _check_images(spec, staging)
        if problems:
            shutil.rmtree(downloads, ignore_errors=True)
            raise DownloadError(
                f"{spec.name}: downloaded data does not check out: {'; '.join(problems[:3])}"
            )
        record = {
            "name": spec.name,
            "files": {
                p.relative_to(staging).as_posix(): sha256_of(p) for p in list_images(staging)
            },
            "source": [asdict(f) for f in spec.files],
        }
        (staging / MARKER).write_text(json.dumps(record, indent=2) + "\n")
        os.replace(staging, final)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(downloads, ignore_errors=True)
    return final


def verify(spec: DatasetSpec, folder: Path) -> list[str]:
    """Problems with an installed dataset (empty: complete and intact)."""
    if not folder.is_dir():
        return [f"{folder} does not exist"]
    problems = _check_images(spec, folder)
    marker = folder / MARKER
    if marker.is_file():
        recorded = json.loads(marker.read_text()).get("files", {})
        for relative, digest in recorded.items():
            path = folder / relative
            if not path.is_file():
                problems.append(f"{relative}: missing")
            elif spec.images.get(relative) is None and sha256_of(path) != digest:
                problems.append(f"{relative}: changed since download")
    return problems


def resolve_images(
    dataset: str, root: Path | None = None, shared: Path | None = None
) -> tuple[str, list[Path]]:
    """Images of ``dataset``: a folder path, or a catalog name found under ``root`` or ``shared``."""
    candidate = Path(dataset)
    if candidate.is_dir():
        images = list_images(candidate)
        label = candidate.name
    else:
        aliases = {"clic": ("clic2020-professional-valid", "clic")}
        names = aliases.get(dataset, (dataset,))
        places = [p for p in (root, shared) if p is not None]
        folder = next((p / n for p in places for n in names if (p / n).is_dir()), None)
        if folder is None:
            raise UsageError(
                f"dataset {dataset!r} not found under {', '.join(map(str, places)) or 'any root'}; "
                f"download it with `lic datasets download {names[0]} --root DIR` or pass a folder"
            )
        images = list_images(folder)
        label = dataset
    if not images:
        raise UsageError(f"no images in {dataset}")
    return label, images
