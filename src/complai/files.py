"""The one way complai writes a file or folder a user named: never a silent overwrite, never through
a symlink, never into the workspace's key folder, private (0600 / 0700) from the first byte.

Every output goes to a temporary file in the target's folder, is flushed to disk, and only then
appears under its name: `os.link` for a new file (which fails rather than replace one that appeared
meanwhile), `os.replace` with `force`. A failure removes the temporary file; a killed process leaves
one named `.NAME.complai-partial.PID.RANDOM`, which the next write into that folder removes once
PID is gone. A folder of data files (Parquet, as Spark writes it) is staged alike in a private
temporary sibling and renamed into place whole (`staged_dataset_dir`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
import stat
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from complai.config import CONFIG_FILE, DEFAULT_DB_FILE
from complai.errors import InvalidInput

PARTIAL = ".complai-partial."
PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def _inside(path: Path, forbidden: Iterable[Path]) -> Path | None:
    """The forbidden path that `path` (resolved, parents' symlinks followed) is or lies under."""
    real = Path(os.path.realpath(path))
    for f in forbidden:
        fr = Path(os.path.realpath(f))
        if real == fr or fr in real.parents:
            return Path(f)
    return None


def _lstat_unprotected(path: Path, forbidden: Iterable[Path], what: str) -> os.stat_result | None:
    """What is at `path` now (None: nothing), refusing a path inside a protected one or a symbolic link."""
    hit = _inside(path, forbidden)
    if hit is not None:
        raise InvalidInput(f"{path} is inside the workspace's protected files ({hit}); choose another {what}")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        raise InvalidInput(f"{path.parent} is not a directory") from None
    if stat.S_ISLNK(st.st_mode):
        raise InvalidInput(f"{path} is a symbolic link; complai does not write through links")
    return st


def check_output(path: Path | str, *, force: bool = False, forbidden: Iterable[Path] = ()) -> Path:
    """Refuse (InvalidInput, nothing written) an output file path that may not be written.

    Call it before the operation that produces the data, so a refusal comes before any side effect."""
    path = Path(path)
    forbidden = list(forbidden)
    if path.name in ("", ".", ".."):
        raise InvalidInput(f"{path} is not a file name")
    st = _lstat_unprotected(path, forbidden, "path")
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise InvalidInput(f"{path} is a directory; give a file name")
        if not stat.S_ISREG(st.st_mode):
            raise InvalidInput(f"{path} exists and is not a regular file")
        if not force:
            raise InvalidInput(f"{path} already exists; use --force to overwrite it")
    parent = path.parent
    if not parent.is_dir():
        raise InvalidInput(f"directory {parent} does not exist")
    return path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_partials(directory: Path) -> int:
    """Remove temporary files that killed complai processes left in `directory`; returns how many."""
    removed = 0
    try:
        names = os.listdir(directory)
    except OSError:
        return 0
    for name in names:
        if not name.startswith(".") or PARTIAL not in name:
            continue
        parts = name.rsplit(".", 2)
        if len(parts) != 3 or not parts[1].isdigit():
            continue
        pid = int(parts[1])
        if pid == os.getpid() or _pid_alive(pid):
            continue
        full = os.path.join(directory, name)
        with contextlib.suppress(OSError):  # gone meanwhile, or another user's in a shared folder
            if stat.S_ISDIR(os.lstat(full).st_mode):
                shutil.rmtree(full)
            else:
                os.unlink(full)
            removed += 1
    return removed


@contextlib.contextmanager
def atomic_output(
    path: Path | str, *, force: bool = False, mode: int = PRIVATE_FILE, forbidden: Iterable[Path] = ()
) -> Iterator[BinaryIO]:
    """A binary file object whose content appears at `path` only if the block completes."""
    path = check_output(path, force=force, forbidden=forbidden)
    remove_stale_partials(path.parent)
    tmp = path.with_name(f".{path.name}{PARTIAL}{os.getpid()}.{secrets.token_hex(4)}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
    except OSError as exc:
        raise InvalidInput(f"cannot write {path}: {exc.strerror}") from None
    try:
        os.fchmod(fd, mode)  # the umask does not widen or narrow what was asked for
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        if force:
            check_output(path, force=True, forbidden=forbidden)  # not turned into a link meanwhile
            os.replace(tmp, path)
        else:
            _link_new(tmp, path)
        _sync_dir(path.parent)
    except OSError as exc:
        if exc.errno not in _WRITE_ERRORS:
            raise
        raise InvalidInput(f"cannot write {path}: {exc.strerror}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


# failures of the output itself (full, read-only, not allowed): a one-line refusal, nothing left behind
_WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}


def _link_new(tmp: Path, path: Path) -> None:
    try:
        os.link(tmp, path, follow_symlinks=False)
    except FileExistsError:
        raise InvalidInput(f"{path} already exists; use --force to overwrite it") from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        # a file system without hard links: exclusive create, then copy
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), PRIVATE_FILE)
        try:
            os.fchmod(fd, stat.S_IMODE(os.stat(tmp).st_mode))
            with os.fdopen(fd, "wb") as out, open(tmp, "rb") as src:
                while block := src.read(1 << 20):
                    out.write(block)
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            raise


def _sync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def write_private(
    path: Path | str,
    data: bytes | str,
    *,
    force: bool = False,
    mode: int = PRIVATE_FILE,
    forbidden: Iterable[Path] = (),
) -> Path:
    """Write `data` to a new file at `path` (mode 0600 unless told), atomically; see the module doc."""
    blob = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_output(path, force=force, mode=mode, forbidden=forbidden) as fh:
        fh.write(blob)
    return Path(path)


def check_output_dir(path: Path | str, *, forbidden: Iterable[Path] = ()) -> Path:
    """Refuse a folder for output files that is a link, a file, or inside a protected path."""
    path = Path(path)
    st = _lstat_unprotected(path, forbidden, "folder")
    if st is not None and not stat.S_ISDIR(st.st_mode):
        raise InvalidInput(f"{path} exists and is not a directory")
    return path


def output_dir(path: Path | str, *, forbidden: Iterable[Path] = (), mode: int = PRIVATE_DIR) -> Path:
    """The folder `path` for output files, created (mode 0700) if it does not exist."""
    path = check_output_dir(path, forbidden=forbidden)
    if not path.exists():
        try:
            path.mkdir(parents=True, mode=mode)
        except FileExistsError:
            return check_output_dir(path, forbidden=forbidden)
        except OSError as exc:
            raise InvalidInput(f"cannot create directory {path}: {exc.strerror}") from None
        os.chmod(path, mode)
    return path


def check_outputs(
    directory: Path | str, names: Iterable[str], *, force: bool = False, forbidden: Iterable[Path] = ()
) -> None:
    """Refuse before acting when any of `names` in the output folder `directory` may not be written."""
    directory = check_output_dir(directory, forbidden=forbidden)
    if directory.exists():
        for name in names:
            check_output(directory / name, force=force, forbidden=forbidden)


def workspace_protected(workspace: Path | str) -> list[Path]:
    """Paths no output may replace or enter: the workspace's keys, settings and database files."""
    ws = Path(workspace)
    db = ws / DEFAULT_DB_FILE
    return [ws / "keys", ws / CONFIG_FILE, db, Path(f"{db}-wal"), Path(f"{db}-shm"), Path(f"{db}-journal")]


@contextlib.contextmanager
def staged_output_dir(path: Path | str, *, forbidden: Iterable[Path] = (), mode: int = PRIVATE_DIR) -> Iterator[Path]:
    """A new folder to fill: the block writes into a temporary sibling, which takes the name `path`
    (new, or an existing empty folder) only when the block completes; a failure leaves nothing."""
    path = check_output_dir(path, forbidden=forbidden)
    if path.exists() and any(path.iterdir()):
        raise InvalidInput(f"{path} is not empty; choose an empty or new directory")
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidInput(f"cannot create directory {parent}: {exc.strerror}") from None
    if not parent.is_dir():
        raise InvalidInput(f"{parent} is not a directory")
    remove_stale_partials(parent)
    tmp = parent / f".{path.name}{PARTIAL}{os.getpid()}.{secrets.token_hex(4)}"
    try:
        try:
            tmp.mkdir(mode=mode)
        except OSError as exc:  # a parent that takes no folders (/proc, a file system mounted read-only...)
            raise InvalidInput(f"cannot create {path}: {exc.strerror}") from None
        os.chmod(tmp, mode)
        yield tmp
        check_output_dir(path, forbidden=forbidden)
        try:
            os.rename(tmp, path)  # replaces only a missing or empty folder
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                raise InvalidInput(f"{path} is not empty; choose an empty or new directory") from None
            raise
        _sync_dir(parent)
    except OSError as exc:
        if exc.errno not in _WRITE_ERRORS:
            raise
        raise InvalidInput(f"cannot write {path}: {exc.strerror}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# what a Parquet writer (Spark's, Hadoop's) leaves in its output folder: the part files (part-00000-<uuid>-c000
# .snappy.parquet, part-r-00000.parquet), their checksums, markers; a file merely named part-... is not one
_PART = r"part-(?:[mr]-)?\d+(?:[-.][A-Za-z0-9_.-]*)?"
_DATA_FILE = re.compile(
    rf"{_PART}|\.{_PART}\.crc|_SUCCESS|\._SUCCESS\.crc|_(common_)?metadata|_(committed|started)_\d+"
)


def _check_replaceable(path: Path, st: os.stat_result, force: bool) -> None:
    """Refuse an existing output folder's path unless `force`, and then unless it is a file or a folder
    of data files only: `force` never removes a folder of anything else."""
    if not force:
        raise InvalidInput(f"{path} already exists; use --force to replace it")
    if stat.S_ISREG(st.st_mode):
        return
    if not stat.S_ISDIR(st.st_mode):
        raise InvalidInput(f"{path} exists and is not a regular file or folder")
    with os.scandir(path) as entries:
        for entry in entries:
            if not entry.is_file(follow_symlinks=False) or not _DATA_FILE.fullmatch(entry.name):
                raise InvalidInput(
                    f"{path} holds more than data files ({entry.name!r}); complai replaces only a folder of "
                    "data files, choose another path"
                )


def _make_private(root: Path) -> None:
    """Every folder under `root` (itself included) 0700, every file 0600; links are removed."""
    os.chmod(root, PRIVATE_DIR)
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            full = os.path.join(folder, name)
            if os.path.islink(full):
                os.unlink(full)
            else:
                os.chmod(full, PRIVATE_DIR if name in dirs else PRIVATE_FILE)


def check_dataset_dir(path: Path | str, *, force: bool = False, forbidden: Iterable[Path] = ()) -> Path:
    """Refuse (InvalidInput, nothing written) a path `staged_dataset_dir` may not write: a link, a path
    inside a protected one, a folder that does not exist above it, or an existing path unless `force`
    (and then anything but a file or a folder of data files). Call it before producing the data."""
    path = Path(path)
    if path.name in ("", ".", ".."):
        raise InvalidInput(f"{path} is not a folder name")
    st = _lstat_unprotected(path, forbidden, "path")
    if st is not None:
        _check_replaceable(path, st, force)
    if not path.parent.is_dir():
        raise InvalidInput(f"directory {path.parent} does not exist")
    return path


@contextlib.contextmanager
def staged_dataset_dir(
    path: Path | str, *, force: bool = False, forbidden: Iterable[Path] = (), then: Callable[[], object] | None = None
) -> Iterator[Path]:
    """A folder of data files (Parquet as Spark writes it) that appears at `path` whole or not at all.

    The block gets a path that does not exist yet, inside a private (0700) temporary sibling of `path`,
    for a writer that makes its own folder; once the block completes, everything under it is made
    private (folders 0700, files 0600) and it takes the name `path`. An existing `path` is refused
    unless `force`, and even then unless it is a file or a folder of data files only (part files,
    their checksums, markers); a link is always refused. `then` (recording what was written) runs once
    the folder is in place, while a replaced output can still be put back. A failure, of `then` too,
    leaves nothing, and `path` as it was."""
    forbidden = list(forbidden)
    path = check_dataset_dir(path, force=force, forbidden=forbidden)
    parent = path.parent
    remove_stale_partials(parent)
    stage = parent / f".{path.name}{PARTIAL}{os.getpid()}.{secrets.token_hex(4)}"
    try:
        stage.mkdir(mode=PRIVATE_DIR)
    except OSError as exc:
        raise InvalidInput(f"cannot create {path}: {exc.strerror}") from None
    try:
        os.chmod(stage, PRIVATE_DIR)
        target = stage / "data"
        yield target
        if not target.is_dir():
            raise InvalidInput(f"nothing was written to {path}")
        _make_private(target)
        st = _lstat_unprotected(path, forbidden, "path")  # again: it may have appeared meanwhile
        old = None
        if st is not None:
            _check_replaceable(path, st, force)
            old = stage / "old"
            os.rename(path, old)
        try:
            os.rename(target, path)
        except BaseException:
            if old is not None:
                os.rename(old, path)
            raise
        if then is not None:
            try:
                then()
            except BaseException:
                os.rename(path, target)  # back into the stage, removed below
                if old is not None:
                    os.rename(old, path)
                raise
        _sync_dir(parent)
    except OSError as exc:
        if exc.errno not in _WRITE_ERRORS:
            raise
        raise InvalidInput(f"cannot write {path}: {exc.strerror}") from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)
