"""Safe bundle extraction: the real bundle tarball unpacks and verifies; crafted hostile archives (traversal,
absolute paths, escaping symlinks and hardlinks, devices, FIFOs) are refused with the member named, and leave
nothing behind at the destination or outside it."""

from __future__ import annotations

import io
import shutil
import stat
import tarfile
from pathlib import Path, PurePosixPath

import pytest

from edgetune.bundle_archive import check_member, extract_bundle
from edgetune.constants import MANIFEST_FILE
from edgetune.errors import BundleError, ConfigError

NAME = "tiny-rpi5-8gb"


@pytest.fixture(scope="module")
def tarball(tiny_bundle) -> Path:
    return tiny_bundle.file("tarball")


@pytest.fixture(scope="module")
def bundle_dir(tiny_bundle) -> Path:
    return tiny_bundle.path / tiny_bundle.outputs["bundle"]


def member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "", data: bytes = b"") -> tuple:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size, info.mode = kind, linkname, len(data), 0o644
    return info, (io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def craft(path: Path, bundle_dir: Path | None, *extra: tuple, mode: dict[str, int] | None = None) -> Path:
    """A .tar.gz holding the real bundle folder (unless None), then `extra` members after it, so refusals come
    after real files were already extracted to the temp folder."""
    with tarfile.open(path, "w:gz") as tar:
        if bundle_dir is not None:
            for p in [bundle_dir, *sorted(bundle_dir.rglob("*"))]:
                info = tar.gettarinfo(p, arcname=str(PurePosixPath(NAME) / p.relative_to(bundle_dir)))
                info.mode = (mode or {}).get(p.name, info.mode)
                if p.is_file():
                    with p.open("rb") as fh:
                        tar.addfile(info, fh)
                else:
                    tar.addfile(info)
        for info, fileobj in extra:
            tar.addfile(info, fileobj)
    return path


def tree(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) if root.exists() else []


# --- the good path -----------------------------------------------------------------------------------------

def test_extracts_and_verifies_the_real_bundle(tarball, bundle_dir, tmp_path):
    dest = tmp_path / "models"
    root = extract_bundle(tarball, dest)
    assert root == dest / NAME
    assert tree(root) == tree(bundle_dir)
    assert [p.name for p in dest.iterdir()] == [NAME]  # no temp folder left
    for rel in tree(bundle_dir):
        if (bundle_dir / rel).is_file():
            assert (root / rel).read_bytes() == (bundle_dir / rel).read_bytes(), rel


def test_existing_bundle_folder_is_not_overwritten(tarball, tmp_path):
    (tmp_path / NAME).mkdir()
    (tmp_path / NAME / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError) as exc:
        extract_bundle(tarball, tmp_path)
    assert exc.value.message == f"{tmp_path / NAME} already exists"
    assert tree(tmp_path) == [NAME, f"{NAME}/keep.txt"]


def test_data_filter_drops_setuid_and_world_write(bundle_dir, tmp_path):
    archive = craft(tmp_path / "b.tar.gz", bundle_dir, mode={"README.md": 0o6777})
    root = extract_bundle(archive, tmp_path / "out")
    mode = (root / "README.md").stat().st_mode
    assert not mode & (stat.S_ISUID | stat.S_ISGID | stat.S_IWOTH)


def test_in_bundle_symlink_passes_the_member_check():
    links: set[PurePosixPath] = set()
    info, _ = member(f"{NAME}/latest.gguf", tarfile.SYMTYPE, "models/tiny-Q4_0.gguf")
    assert check_member(info, NAME, links) == PurePosixPath(f"{NAME}/latest.gguf")
    assert links == {PurePosixPath(f"{NAME}/latest.gguf")}


# --- hostile archives --------------------------------------------------------------------------------------

HOSTILE = [
    ("traversal", member(f"{NAME}/../../evil.txt", data=b"x"), "path traversal ('..')"),
    ("traversal-at-top", member("../evil.txt", data=b"x"), "path traversal ('..')"),
    ("absolute", member("/tmp/edgetune-evil.txt", data=b"x"), "absolute path"),
    ("symlink-escaping", member(f"{NAME}/models/up", tarfile.SYMTYPE, "../../.."),
     "symlink pointing outside the bundle ('../../..')"),
    ("symlink-absolute", member(f"{NAME}/passwd", tarfile.SYMTYPE, "/etc/passwd"),
     "symlink to an absolute path ('/etc/passwd')"),
    ("hardlink-escaping", member(f"{NAME}/h", tarfile.LNKTYPE, "../outside.txt"),
     "hardlink pointing outside the bundle ('../outside.txt')"),
    ("hardlink-absolute", member(f"{NAME}/h", tarfile.LNKTYPE, "/etc/passwd"),
     "hardlink pointing outside the bundle ('/etc/passwd')"),
    ("hardlink-elsewhere", member(f"{NAME}/h", tarfile.LNKTYPE, "other/file"),
     "hardlink pointing outside the bundle ('other/file')"),
    ("char-device", member(f"{NAME}/null", tarfile.CHRTYPE), "device file"),
    ("block-device", member(f"{NAME}/sda", tarfile.BLKTYPE), "device file"),
    ("fifo", member(f"{NAME}/pipe", tarfile.FIFOTYPE), "FIFO"),
    ("second-top-folder", member("other/file.txt", data=b"x"), "outside the bundle's one top-level folder"),
    ("duplicate", member(f"{NAME}/README.md", data=b"replaced"), "appears twice in the archive"),
]


@pytest.mark.parametrize("case, entry, why", HOSTILE, ids=[c for c, _, _ in HOSTILE])
@pytest.mark.parametrize("dest_exists", [True, False], ids=["dest-exists", "dest-new"])
def test_hostile_member_is_refused_and_nothing_is_left(bundle_dir, tmp_path, case, entry, why, dest_exists):
    info, _ = entry
    info, fileobj = member(info.name, info.type, info.linkname, b"x" if info.type == tarfile.REGTYPE else b"")
    archive = craft(tmp_path / "hostile.tar.gz", bundle_dir, (info, fileobj))
    dest = tmp_path / "dest" / "deeper"
    if dest_exists:
        dest.mkdir(parents=True)
    with pytest.raises(BundleError) as exc:
        extract_bundle(archive, dest)
    assert exc.value.message.startswith(f"refusing bundle member {info.name!r}: {why}")
    assert exc.value.exit_code == 7
    assert tree(tmp_path / "dest") == (["deeper"] if dest_exists else [])  # dest as it was
    assert tree(tmp_path) == sorted(["hostile.tar.gz", *(["dest", "dest/deeper"] if dest_exists else [])])
    assert not Path("/tmp/edgetune-evil.txt").exists()


def test_writing_through_an_in_bundle_symlink_is_refused(bundle_dir, tmp_path):
    archive = craft(tmp_path / "a.tar.gz", bundle_dir, member(f"{NAME}/m", tarfile.SYMTYPE, "models"),
                    member(f"{NAME}/m/extra.gguf", data=b"x"))
    with pytest.raises(BundleError, match=rf"refusing bundle member '{NAME}/m/extra.gguf': written through a "):
        extract_bundle(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("first, why", [
    (member("README.md", data=b"x"), "the top-level member must be a folder"),
    (member(".", tarfile.DIRTYPE), "a bundle archive holds one top-level folder"),
    (member("/abs", tarfile.DIRTYPE), "absolute path"),
], ids=["file-at-top", "dot", "absolute-first"])
def test_the_first_member_must_be_the_bundle_folder(tmp_path, first, why):
    archive = craft(tmp_path / "a.tar.gz", None, first, member("README.md/x", data=b"x"))
    with pytest.raises(BundleError, match=rf"refusing bundle member '{first[0].name}': {why}"):
        extract_bundle(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --- damaged archives and bundles ---------------------------------------------------------------------------

def test_truncated_archive(tarball, tmp_path):
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(tarball.read_bytes()[: tarball.stat().st_size // 2])
    with pytest.raises(BundleError, match=r"cut.tar.gz is not a readable bundle archive: "):
        extract_bundle(cut, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content", [b"", b"definitely not a tarball" * 100], ids=["empty", "garbage"])
def test_not_an_archive(tmp_path, content):
    path = tmp_path / "x.tar.gz"
    path.write_bytes(content)
    with pytest.raises(BundleError, match="is (not a readable bundle archive|an empty archive)"):
        extract_bundle(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_tampered_bundle_fails_verification_and_is_removed(bundle_dir, tmp_path):
    copy = Path(shutil.copytree(bundle_dir, tmp_path / "copy" / NAME))
    gguf = copy / "models" / "tiny-Q8_0.gguf"
    blob = bytearray(gguf.read_bytes())
    blob[-1] ^= 0xFF
    gguf.write_bytes(bytes(blob))
    archive = craft(tmp_path / "t.tar.gz", copy)
    (tmp_path / "out").mkdir()
    with pytest.raises(BundleError, match="bundle file changed: models/tiny-Q8_0.gguf"):
        extract_bundle(archive, tmp_path / "out")
    assert tree(tmp_path / "out") == []


def test_bundle_without_manifest_is_refused(bundle_dir, tmp_path):
    copy = Path(shutil.copytree(bundle_dir, tmp_path / "copy" / NAME))
    (copy / MANIFEST_FILE).unlink()
    with pytest.raises(BundleError, match="has no manifest.json"):
        extract_bundle(craft(tmp_path / "t.tar.gz", copy), tmp_path / "out")
    assert not (tmp_path / "out").exists()
