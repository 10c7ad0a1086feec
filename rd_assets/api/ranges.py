"""Single byte ranges of asset bytes (RFC 9110 section 14): resume a large weight download, read a file's head.

What is served: one range, ``bytes=first-last``, ``bytes=first-`` or ``bytes=-suffix``, as 206 with
``Content-Range``; a range that selects no byte is 416. Everything else the RFC lets a server ignore is ignored
and the whole file is sent (200): another unit, several ranges, a malformed header, a number of more than
:data:`MAX_DIGITS` digits, and an ``If-Range`` that is not our current strong ETag (a date included: the API
sends no Last-Modified, so no date can prove the client's copy current).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rd_assets.api.errors import RangeNotSatisfiableError

MAX_DIGITS = 18
"""Longer numbers are past any file here; ignoring such a header is allowed and avoids huge-int parsing."""
_SPEC = re.compile(rf"bytes=(\d{{0,{MAX_DIGITS}}})-(\d{{0,{MAX_DIGITS}}})", re.ASCII | re.IGNORECASE)


@dataclass(frozen=True)
class ByteRange:
    """Bytes ``start`` to ``end`` inclusive of a file of ``size`` bytes."""

    start: int
    end: int
    size: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    @property
    def content_range(self) -> str:
        return f"bytes {self.start}-{self.end}/{self.size}"


def requested_range(range_header: str | None, if_range: str | None, etag: str, size: int) -> ByteRange | None:
    """The one range to send, or None for the whole file; raises :class:`RangeNotSatisfiableError` (416)."""
    if range_header is None or (if_range is not None and if_range.strip() != etag):
        return None
    match = _SPEC.fullmatch(range_header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first:
        if not last:
            return None
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiableError(f"range {range_header!r} selects no byte of {size}", size=size)
        return ByteRange(max(0, size - suffix), size - 1, size)
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= size:
        raise RangeNotSatisfiableError(f"range {range_header!r} starts at or past the end ({size} bytes)", size=size)
    return ByteRange(start, min(int(last), size - 1) if last else size - 1, size)
