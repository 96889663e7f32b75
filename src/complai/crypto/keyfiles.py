"""Secret key files: written atomically with mode 0600, refused on read if others can access them."""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from complai.errors import IntegrityError, InvalidInput, WorkspaceError


def write_secret(path: Path, data: bytes) -> None:
    """Create a new secret file (never overwrites); mode 0600 from the first byte written."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.link(tmp, path)  # fails if path exists: a key is never silently replaced
    finally:
        tmp.unlink(missing_ok=True)


def read_secret(path: Path, *, size: int | None = None) -> bytes:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise WorkspaceError(f"key file {path.name} is missing from {path.parent}") from None
    except OSError as exc:
        raise InvalidInput(f"cannot read key file {path}: {exc.strerror or type(exc).__name__}") from None
    if not stat.S_ISREG(st.st_mode):  # a directory, device or FIFO: refuse before reading (which could block)
        raise InvalidInput(f"key file {path} is not a regular file")
    if os.name == "posix" and st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise WorkspaceError(
            f"key file {path.name} is readable by others (mode {oct(st.st_mode & 0o777)}); chmod 600 it"
        )
    data = path.read_bytes()
    if size is not None and len(data) != size:
        raise IntegrityError(f"key file {path.name} has the wrong length")
    return data
