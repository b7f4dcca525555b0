"""Unpacking a bundle tarball safely: a hostile or damaged archive never writes outside its destination.

Reads `<name>.tar.gz` as the bundle stage writes it (one top-level folder holding the bundle); writes
`DEST/<name>/` only when every member passed the checks and `verify_bundle` accepted the result. Members are
extracted into a temp folder inside DEST, then the bundle folder is renamed into place, so a refused or broken
archive leaves DEST as it was. Raises BundleError naming the offending member, ConfigError when DEST/<name>
already exists.

Each member is checked twice: by our own rules (so the error names the member and the reason) and by tarfile's
`data` filter (PEP 706: Python's own guard against the same attacks; it also drops setuid and device bits).
"""

from __future__ import annotations

import gzip
import logging
import os
import shutil
import tarfile
import zlib
from pathlib import Path, PurePosixPath

from edgetune.bundle import verify_bundle
from edgetune.errors import BundleError, ConfigError

log = logging.getLogger(__name__)

_HINT = "the archive was not made by `edgetune build` or was tampered with; do not use it"
# What reading a damaged archive raises: bad headers, a cut or corrupt gzip stream.
_READ_ERRORS = (tarfile.ReadError, EOFError, gzip.BadGzipFile, zlib.error)


def _refuse(member: tarfile.TarInfo, why: str) -> BundleError:
    return BundleError(f"refusing bundle member {member.name!r}: {why}", _HINT)


def _normal(name: str) -> PurePosixPath:
    """Lexically normalised archive path: 'a/./b//c' → 'a/b/c' (callers refuse '..' before)."""
    return PurePosixPath(os.path.normpath(name))


def _inside(root: str, path: PurePosixPath) -> bool:
    return bool(path.parts) and path.parts[0] == root and ".." not in path.parts


def check_member(member: tarfile.TarInfo, root: str | None, links: set[PurePosixPath]) -> PurePosixPath:
    """Raise BundleError unless `member` is a plain file, a folder or an in-bundle link under `root` (None: the
    first member, which names the root). `links` collects the symlinks seen so far: nothing may be written
    through one. Returns the member's normalised path."""
    name = member.name
    if PurePosixPath(name).is_absolute():
        raise _refuse(member, "absolute path")
    if ".." in PurePosixPath(name).parts:
        raise _refuse(member, "path traversal ('..')")
    path = _normal(name)
    root = root if root is not None else (path.parts[0] if path.parts and path.parts[0] != "." else "")
    if not root or not _inside(root, path):
        raise _refuse(member, f"outside the bundle's one top-level folder {root!r}" if root
                      else "a bundle archive holds one top-level folder")
    if any(parent in links for parent in path.parents):
        raise _refuse(member, "written through a symlink")
    if member.issym():
        target = member.linkname
        if PurePosixPath(target).is_absolute():
            raise _refuse(member, f"symlink to an absolute path ({target!r})")
        if not _inside(root, _normal(str(path.parent / target))):
            raise _refuse(member, f"symlink pointing outside the bundle ({target!r})")
        links.add(path)
    elif member.islnk():
        target = member.linkname
        if PurePosixPath(target).is_absolute() or ".." in PurePosixPath(target).parts or not _inside(
                root, _normal(target)):
            raise _refuse(member, f"hardlink pointing outside the bundle ({target!r})")
    elif member.ischr() or member.isblk():
        raise _refuse(member, "device file")
    elif member.isfifo():
        raise _refuse(member, "FIFO")
    elif not (member.isfile() or member.isdir()):
        raise _refuse(member, f"unsupported member type {member.type!r}")
    return path


def bundle_root(tarball: Path) -> str:
    """The bundle folder's name, from the archive's first member (one header read, no extraction)."""
    try:
        with tarfile.open(tarball, "r:*") as tar:
            first = tar.next()
    except _READ_ERRORS as exc:
        raise BundleError(f"{tarball} is not a readable bundle archive: {exc}",
                          "copy it again; a transfer may have been cut") from exc
    if first is None:
        raise BundleError(f"{tarball} is an empty archive", "rebuild the bundle")
    return check_member(first, None, set()).parts[0]


def extract_bundle(tarball: Path, dest: Path) -> Path:
    """Extract the bundle in `tarball` to DEST/<bundle name>, verify every file, and return that folder.

    Raises BundleError for an unreadable archive, a refused member (named in the message) or a bundle that
    fails `verify_bundle`; ConfigError when DEST/<bundle name> already exists. On error DEST is left as it was.
    """
    tarball, dest = Path(tarball), Path(dest)
    if not hasattr(tarfile, "data_filter"):
        raise BundleError("this Python has no tarfile extraction filters (PEP 706)", "use Python 3.11.4 or newer")
    root = bundle_root(tarball)
    final = dest / root
    if final.exists() or final.is_symlink():
        raise ConfigError(f"{final} already exists", "remove it, or extract into another folder")
    created = next((p for p in reversed([dest, *dest.parents]) if not p.exists()), None)
    dest.mkdir(parents=True, exist_ok=True)
    tmp = dest / f".{root}.extract-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    done = False
    try:
        _extract_checked(tarball, tmp, root)
        verify_bundle(tmp / root)
        os.rename(tmp / root, final)
        done = True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if not done and created is not None:
            shutil.rmtree(created, ignore_errors=True)  # only folders this call made
    log.info("extracted bundle %s to %s", tarball.name, final)
    return final


def _extract_checked(tarball: Path, into: Path, root: str) -> None:
    """Check, then extract, member by member: one pass over the compressed stream."""
    seen: set[PurePosixPath] = set()
    links: set[PurePosixPath] = set()
    try:
        with tarfile.open(tarball, "r:*") as tar:
            for member in tar:
                path = check_member(member, root, links)
                if path == PurePosixPath(root) and not member.isdir():
                    raise _refuse(member, "the top-level member must be a folder")
                if path in seen:
                    raise _refuse(member, "appears twice in the archive")
                seen.add(path)
                try:
                    tar.extract(member, into, filter="data")
                except tarfile.FilterError as exc:
                    raise _refuse(member, str(exc)) from exc
                except _READ_ERRORS:
                    raise  # the archive is damaged, not the destination: reported below
                except KeyError as exc:  # a hardlink to a member the archive does not hold
                    raise _refuse(member, f"link target {member.linkname!r} is not in the archive") from exc
                except OSError as exc:
                    raise BundleError(f"cannot extract {member.name!r} into {into}: {exc}",
                                      "check free space and permissions at the destination") from exc
    except _READ_ERRORS as exc:
        raise BundleError(f"{tarball} is not a readable bundle archive: {exc}",
                          "copy it again; a transfer may have been cut") from exc
    if not (into / root).is_dir():
        raise BundleError(f"{tarball}: the top-level {root!r} is not a folder", _HINT)
