"""Owner-only files for secrets: create them 0600 in 0700 directories, refuse loose ones on load.

The checks follow what OpenSSH does for ``~/.ssh``: a private key that the group or the world
can read, or a directory that they can write (so they could swap the key), is refused with a
:class:`~eap.node.errors.ConfigError` that says how to fix it.  Files are opened with
``O_NOFOLLOW`` and checked with ``fstat`` on the open descriptor, so the file checked is the
file read.  On Windows, where POSIX modes mean little, the mode checks are skipped.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from eap.node.errors import AlreadyExists, ConfigError

_POSIX = os.name == "posix"
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_BINARY = getattr(os, "O_BINARY", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)

PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700
PUBLIC_FILE_MODE = 0o644


def _owner_ok(st: os.stat_result) -> bool:
    return not _POSIX or st.st_uid in (os.geteuid(), 0)


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` (and parents) with mode 0700 if missing; otherwise check it.

    An existing directory is never chmod-ed (it could be a shared one such as ``/tmp``); it
    is refused instead if group or others may write it (see :func:`check_private_dir`).

    Raises:
        ConfigError: ``path`` is not a directory, belongs to another user, or is writable by
            group or others.
    """
    try:
        path.mkdir(mode=PRIVATE_DIR_MODE, parents=True)
    except FileExistsError:
        check_private_dir(path)
        return
    except NotADirectoryError as exc:
        raise ConfigError(f"{path} cannot be created: a parent is not a directory") from exc
    if _POSIX:
        os.chmod(path, PRIVATE_DIR_MODE)  # mkdir's mode is filtered by the umask


def check_private_dir(path: Path) -> None:
    """Refuse a secrets directory that is missing, not ours, or writable by group or others.

    Raises:
        ConfigError: with the ``chmod`` that fixes it.
    """
    try:
        st = path.lstat()
    except FileNotFoundError as exc:
        raise ConfigError(f"{path} does not exist") from exc
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"{path} is not a directory (symbolic links are not followed)")
    if not _owner_ok(st):
        raise ConfigError(f"{path} belongs to uid {st.st_uid}, not to this user")
    if _POSIX and st.st_mode & 0o022:
        raise ConfigError(
            f"permissions {stat.S_IMODE(st.st_mode):04o} for {path} are too open: group or "
            f"others may replace the keys in it; run `chmod 700 {path}`"
        )


def read_private_file(path: Path) -> bytes:
    """Read a secret file, refusing it if group or others have any access to it.

    Raises:
        ConfigError: missing, not a regular file, a symbolic link, not ours, or mode not 0600/0400.
    """
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _BINARY | _CLOEXEC)
    except FileNotFoundError as exc:
        raise ConfigError(f"{path} does not exist") from exc
    except OSError as exc:
        raise ConfigError(f"cannot open {path}: {exc.strerror or exc}") from exc
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{path} is not a regular file")
        if not _owner_ok(st):
            raise ConfigError(f"{path} belongs to uid {st.st_uid}, not to this user")
        if _POSIX and st.st_mode & 0o077:
            raise ConfigError(
                f"permissions {stat.S_IMODE(st.st_mode):04o} for secret file {path} are "
                f"too open: it must not be accessible by group or others; "
                f"run `chmod 600 {path}`"
            )
        return fh.read()


def read_public_file(path: Path) -> bytes:
    """Read a non-secret file (certificate, metadata) that group or others must not write.

    Raises:
        ConfigError: missing, not a regular file, or writable by group or others.
    """
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _BINARY | _CLOEXEC)
    except FileNotFoundError as exc:
        raise ConfigError(f"{path} does not exist") from exc
    except OSError as exc:
        raise ConfigError(f"cannot open {path}: {exc.strerror or exc}") from exc
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{path} is not a regular file")
        if _POSIX and st.st_mode & 0o022:
            raise ConfigError(
                f"permissions {stat.S_IMODE(st.st_mode):04o} for {path} are too open: group "
                f"or others may write it; run `chmod go-w {path}`"
            )
        return fh.read()


def _fsync_dir(path: Path) -> None:
    if not _POSIX:
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_file(path: Path, data: bytes, mode: int = PRIVATE_FILE_MODE) -> None:
    """Create ``path`` with ``mode`` and write ``data``; never replaces an existing file.

    Raises:
        AlreadyExists: ``path`` exists already.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _BINARY | _CLOEXEC
    try:
        fd = os.open(path, flags, mode)
    except FileExistsError as exc:
        raise AlreadyExists(f"{path} exists already; refusing to overwrite it") from exc
    try:
        if _POSIX:
            os.fchmod(fd, mode)  # the umask may have removed bits we want (0644 files)
        with os.fdopen(fd, "wb", closefd=False) as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            path.unlink()
        raise
    os.close(fd)
    _fsync_dir(path.parent)


def replace_file(path: Path, data: bytes, mode: int = PRIVATE_FILE_MODE) -> None:
    """Atomically replace (or create) ``path`` with ``data``: readers see old or new, never half."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if _POSIX:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb", closefd=False) as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


@contextlib.contextmanager
def dir_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path/.lock`` (POSIX ``flock``; a no-op elsewhere).

    Serialises mutations (rotation, pruning) between processes sharing one node home.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    fd = os.open(path / ".lock", os.O_RDWR | os.O_CREAT | _CLOEXEC, PRIVATE_FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
