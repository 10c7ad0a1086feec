"""Open one session file safely, apply the signature policy and verify its MAC before a byte is parsed.

A file whose signature is checked is copied once (by the kernel, ``sendfile``) into a sealed anonymous memory
file and its HMAC computed over that copy: the bytes that verified are then exactly the bytes the reader
parses, even if RD-Agent (or an attacker) rewrites the log file meanwhile. Any other file is handed to the
reader as the descriptor opened here. Either way the isolated reader never opens a path itself.

Opening: ``O_NOFOLLOW | O_NONBLOCK`` (a symlink or a FIFO swapped in after discovery is refused, never
followed or waited on) and an ``fstat`` regular-file check.

Signature policy (DESIGN: a configured key means signed sessions are expected):

* key configured: a signed file must verify (``signature_mismatch`` otherwise); a plain file is refused
  (``unsigned_snapshot``) unless ``RD_ASSETS_ALLOW_UNSIGNED=1`` opts out explicitly;
* no key: plain files read as ``unsigned``, signed ones as ``signature not verified``;
* ``RD_ASSETS_REQUIRE_SIGNATURE=1``: anything not verified is refused from its header.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import hmac
import os
import stat
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from rd_assets.core.errors import (
    ReaderLimitExceededError,
    SignatureMismatchError,
    SignatureUnverifiedError,
    UnreadableSnapshotError,
    UnsignedSnapshotError,
)
from rd_assets.core.session.unpickler import load_stream

SIGNED_MAGIC = b"RDAGENT_SIGNED_PICKLE_V1\n"
SIGNED_HEADER_LEN = len(SIGNED_MAGIC) + 32
ENV_REQUIRE_SIGNATURE = "RD_ASSETS_REQUIRE_SIGNATURE"
ENV_ALLOW_UNSIGNED = "RD_ASSETS_ALLOW_UNSIGNED"
ENV_MAX_SNAPSHOT_MB = "RD_ASSETS_MAX_SNAPSHOT_MB"
_READ_BUFFER = 1 << 16
DEFAULT_MAX_SNAPSHOT_MB = 4096
"""A session file is held in memory once while it is read; genuine ones are a few MB to a few hundred."""

_TRUE = {"1", "true", "yes"}


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def signature_required() -> bool:
    """``RD_ASSETS_REQUIRE_SIGNATURE=1``: refuse every session file that is not verified."""
    return _flag(ENV_REQUIRE_SIGNATURE)


def unsigned_allowed() -> bool:
    """``RD_ASSETS_ALLOW_UNSIGNED=1``: with a key configured, still read plain files (reported as unsigned)."""
    return _flag(ENV_ALLOW_UNSIGNED)


def max_snapshot_bytes() -> int:
    raw = os.environ.get(ENV_MAX_SNAPSHOT_MB, "").strip()
    return (int(raw) if raw.isdigit() else DEFAULT_MAX_SNAPSHOT_MB) << 20


class FileFormat(StrEnum):
    PLAIN = "plain"
    SIGNED = "signed"


class SignatureStatus(StrEnum):
    VERIFIED = "verified"
    NOT_VERIFIED = "signature not verified"
    UNSIGNED = "unsigned"


def signing_key_digest(signing_key: str | bytes) -> bytes:
    """rdagent 1.0 keys its HMAC with ``sha256(ARTIFACT_SIGNING_KEY)``."""
    raw = signing_key.encode() if isinstance(signing_key, str) else signing_key
    return hashlib.sha256(raw).digest()


_NOT_REGULAR = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def file_kind(mode: int) -> str:
    """What a file that is not regular is, for a reason a person can act on ("a FIFO", "a directory")."""
    return next((name for is_kind, name in _NOT_REGULAR if is_kind(mode)), "a special file")


def _open_error(exc: OSError, what: str, shown: str) -> UnreadableSnapshotError:
    if exc.errno == errno.ELOOP:
        return UnreadableSnapshotError(f"{what} is a symlink (never followed)", path=shown)
    if exc.errno == errno.ENOTDIR:
        return UnreadableSnapshotError(f"{what} is a symlink or not a directory (never followed)", path=shown)
    return UnreadableSnapshotError(f"cannot open {what} ({exc.strerror or exc})", path=shown)


def open_regular(path: Path, shown: str, *, root: Path | None = None) -> int:
    """A read-only descriptor of a regular file: never through a symlink, never a FIFO, device or directory.

    With ``root``, ``path`` is relative to it and ``root`` and every folder on the way are opened with
    ``O_NOFOLLOW`` too, so a folder swapped for a symlink after discovery cannot lead outside the task dir.
    """
    parts = path.parts if root is not None else (path.name,)
    start = root if root is not None else path.parent
    nofollow = os.O_NOFOLLOW if root is not None else 0
    try:
        dir_fd = os.open(start, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | nofollow)
    except OSError as exc:
        raise _open_error(exc, f"folder {start.name!r}", shown) from exc
    try:
        for part in parts[:-1]:
            try:
                inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
            except OSError as exc:
                raise _open_error(exc, f"folder {part!r}", shown) from exc
            os.close(dir_fd)
            dir_fd = inner
        try:
            fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
        except OSError as exc:
            raise _open_error(exc, "the file", shown) from exc
    finally:
        os.close(dir_fd)
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise UnreadableSnapshotError(f"{file_kind(mode)}, not a regular file", path=shown)
    return fd


@dataclass
class SessionBody:
    """A session file's bytes in a sealed memory file, with the format and signature already decided.

    ``offset`` is where the pickle starts (after a signed header). The descriptor is owned: :meth:`close` it.
    """

    fd: int
    size: int
    offset: int
    file_format: FileFormat
    signature: SignatureStatus
    shown: str

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> SessionBody:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL


def _sealed_copy(src: int, size: int, shown: str) -> int:
    """``size`` bytes of ``src`` in a new memory file that nobody can change any more."""
    memfd = os.memfd_create("rd-assets-session", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        copied = 0
        while copied < size:
            sent = os.sendfile(memfd, src, copied, size - copied)
            if sent == 0:
                raise UnreadableSnapshotError(f"file shrank while read ({copied} of {size} bytes)", path=shown)
            copied += sent
        fcntl.fcntl(memfd, fcntl.F_ADD_SEALS, _SEALS)
    except OSError as exc:
        os.close(memfd)
        raise UnreadableSnapshotError(f"cannot read file ({exc.strerror or exc})", path=shown) from exc
    except BaseException:
        os.close(memfd)
        raise
    return memfd


_CHUNK = 1 << 20


def _verify(memfd: int, size: int, mac: bytes, signing_key: str | bytes, shown: str) -> None:
    """HMAC-SHA256 of the sealed copy's body, compared in constant time, before anything parses it."""
    expected = hmac.new(signing_key_digest(signing_key), digestmod=hashlib.sha256)
    offset = SIGNED_HEADER_LEN
    while offset < size:
        chunk = os.pread(memfd, min(_CHUNK, size - offset), offset)
        expected.update(chunk)
        offset += len(chunk)
    if not hmac.compare_digest(expected.digest(), mac):
        raise SignatureMismatchError("HMAC-SHA256 does not match the configured signing key", path=shown)


def _policy(head: bytes, size: int, signing_key: str | bytes | None, shown: str) -> tuple[FileFormat, SignatureStatus]:
    """Format and signature status from the header alone; refusals happen here, before anything is copied."""
    if not head.startswith(SIGNED_MAGIC):
        if signature_required():
            raise UnsignedSnapshotError(f"a plain pickle, and {ENV_REQUIRE_SIGNATURE} is set", path=shown)
        if signing_key is not None and not unsigned_allowed():
            raise UnsignedSnapshotError(
                f"a plain pickle, but a signing key is configured (set {ENV_ALLOW_UNSIGNED}=1 to read plain files)",
                path=shown,
            )
        return FileFormat.PLAIN, SignatureStatus.UNSIGNED
    if len(head) < SIGNED_HEADER_LEN or size <= SIGNED_HEADER_LEN:
        raise UnreadableSnapshotError("signed file truncated inside its header", path=shown)
    if signing_key is None:
        if signature_required():
            raise SignatureUnverifiedError(
                f"signed, but no RD_ASSETS_SIGNING_KEY is configured to verify it, and {ENV_REQUIRE_SIGNATURE} is set",
                path=shown,
            )
        return FileFormat.SIGNED, SignatureStatus.NOT_VERIFIED
    return FileFormat.SIGNED, SignatureStatus.VERIFIED


def open_session_body(
    path: Path, *, signing_key: str | bytes | None, shown: str | None = None, root: Path | None = None
) -> SessionBody:
    """Open and classify one session file and, with a key, verify a sealed copy; every failure is typed.

    Only a file whose signature is checked is copied (what was verified must be what is parsed); any other
    file is handed over as the opened descriptor itself, so a large plain session is read once, streaming.
    ``root``: ``path`` is relative to this folder and no folder on the way may be a symlink.
    """
    shown = shown or str(path)
    fd = open_regular(path, shown, root=root)
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            raise UnreadableSnapshotError("empty file", path=shown)
        if size > max_snapshot_bytes():
            raise ReaderLimitExceededError(
                f"{size} bytes, over the {max_snapshot_bytes() >> 20} MiB cap ({ENV_MAX_SNAPSHOT_MB})", path=shown
            )
        try:
            head = os.pread(fd, SIGNED_HEADER_LEN, 0)
        except OSError as exc:
            raise UnreadableSnapshotError(f"cannot read file ({exc.strerror or exc})", path=shown) from exc
        file_format, signature = _policy(head, size, signing_key, shown)
        offset = SIGNED_HEADER_LEN if file_format is FileFormat.SIGNED else 0
        if signature is not SignatureStatus.VERIFIED:
            body = SessionBody(fd, size, offset, file_format, signature, shown)
            fd = -1  # the body owns it now
            return body
        body = SessionBody(_sealed_copy(fd, size, shown), size, offset, file_format, signature, shown)
    finally:
        if fd >= 0:
            os.close(fd)
    try:
        _verify(body.fd, size, head[len(SIGNED_MAGIC) : SIGNED_HEADER_LEN], signing_key or b"", shown)
    except BaseException:
        body.close()
        raise
    return body


def load_body(body: SessionBody) -> Any:
    """Unpickle a session body in this process, streaming through a buffer (no mmap: a plain file truncated
    while mapped would kill the process with SIGBUS; the bytes land in their final objects with one copy)."""
    with open(os.dup(body.fd), "rb", buffering=_READ_BUFFER) as stream:
        stream.seek(body.offset)
        return load_stream(stream, path=body.shown)


@dataclass(frozen=True)
class LoadedSession:
    obj: Any
    file_format: FileFormat
    signature: SignatureStatus
    size: int


def load_session_file(
    path: Path, *, signing_key: str | bytes | None = None, display: str | None = None
) -> LoadedSession:
    """Open, verify and unpickle one session file in this process (the isolated reader runs this same path)."""
    with open_session_body(path, signing_key=signing_key, shown=display) as body:
        return LoadedSession(load_body(body), body.file_format, body.signature, body.size)
