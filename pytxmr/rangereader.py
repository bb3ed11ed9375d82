"""How a map task opens its input: a local file directly, a remote one
(``storage``) as a file of ranged reads.

``RangeReader`` reads ``RANGE_BLOCK`` bytes per request, retried with
backoff, and fetches the next block while the map works on this one: a
map streams its byte range of any object and holds two blocks at most.
No Twisted: the task children use it.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from . import storage

__all__ = ["RANGE_BLOCK", "RangeReader", "SizedStream", "open_input"]

#: Bytes of one ranged read of a remote input. Requests cost a round trip
#: each; a map holds one block at a time, and the next one in flight.
RANGE_BLOCK = 8 << 20


class RangeReader:
    """A remote object as a read-only file of ranged reads: ``RANGE_BLOCK``
    bytes per request, each retried with backoff. While the reader works on
    one block, the next is on its way (on the store's own event loop, where
    it has one): two blocks in memory at most, and the transfer overlaps the
    map's work. What ``splits`` reads a remote split (or a compressed
    object) through."""

    def __init__(self, url: str, opts: Mapping[str, str] | None = None, *,
                 block: int | None = None, size: int | None = None,
                 at_least: int = 0) -> None:
        self.url = url
        self.name = url
        self._fs, self._path = storage.filesystem(url, opts)
        self._block = block or RANGE_BLOCK
        self._size = size
        #: The bytes its listing had up to the split's end: an object that
        #: has fewer now changed, and is never read as it is now.
        self._at_least = at_least
        self._pos = 0
        self._buf = b""
        self._buf_start = 0
        #: (start, end, future) of the block being fetched ahead.
        self._ahead: tuple[int, int, Any] | None = None
        self.closed = False

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def seek(self, pos: int, whence: int = 0) -> int:
        if whence == 1:
            pos += self._pos
        elif whence == 2:
            pos += self._object_size()
        self._pos = max(0, pos)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def _object_size(self) -> int:
        if self._size is None:
            info = storage.retrying(self.url, "read", lambda: self._fs.info(self._path))
            size = int(info["size"])
            if size < self._at_least:
                raise storage.shrunk(self.url, self._at_least, size)
            self._size = size
        return self._size

    def _fill(self) -> None:
        start = self._pos
        # Reads past the end are refused (416), not short: know the end.
        size = self._object_size()
        end = min(start + self._block, size)
        if start >= end:
            self._buf, self._buf_start = b"", start
            return
        self._buf = self._take_ahead(start, end)
        if self._buf is None:
            self._buf = storage.retrying(self.url, "read",
                                 lambda: self._fs.cat_file(self._path, start=start, end=end))
        if len(self._buf) != end - start:
            # A server that answers a range with the whole file (or nothing),
            # or an object that changed: never a silently wrong count.
            raise storage.StorageError(
                f"{storage.redact(self.url)}: asked for bytes {start}-{end - 1}, the store "
                f"sent {len(self._buf)} bytes (the object changed, or its server does not "
                "serve byte ranges as it said)", self.url)
        self._buf_start = start
        if end < size:
            self._fetch_ahead(end, min(end + self._block, size))

    def _fetch_ahead(self, start: int, end: int) -> None:
        fetch = getattr(self._fs, "_cat_file", None)
        loop = getattr(self._fs, "loop", None)
        if fetch is None or loop is None or not getattr(self._fs, "async_impl", False):
            return
        import asyncio

        future = asyncio.run_coroutine_threadsafe(fetch(self._path, start=start, end=end), loop)
        self._ahead = (start, end, future)

    def _take_ahead(self, start: int, end: int) -> bytes | None:
        """The block fetched ahead, if it is this one and arrived whole (a
        failed fetch ahead is tried again, with the retries)."""
        ahead, self._ahead = self._ahead, None
        if ahead is None:
            return None
        if ahead[:2] != (start, end):
            ahead[2].cancel()
            return None
        try:
            data = ahead[2].result()
        except Exception:
            return None
        return data if len(data) == end - start else None

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            parts = []
            while chunk := self.read(self._block):
                parts.append(chunk)
            return b"".join(parts)
        offset = self._pos - self._buf_start
        if not 0 <= offset < len(self._buf):
            self._fill()
            offset = 0
        data = self._buf[offset:offset + n]
        self._pos += len(data)
        return data

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)

    def close(self) -> None:
        if self._ahead is not None:
            self._ahead[2].cancel()
            self._ahead = None
        self._buf = b""
        self.closed = True

    def __enter__(self) -> RangeReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_input(path: str, *, whole: bool = False, size: int = 0) -> Any:
    """A binary file of the input ``path``. A local file is unbuffered for a
    split (the reader reads big blocks itself) and buffered when read whole
    through a decompressor (which reads small ones); a remote one is a
    ``RangeReader``, or one stream when read whole over HTTP (which may be
    all the server can do), checked to end at ``size`` if it is known (a
    split's end: the object had at least that many bytes when listed)."""
    if not storage.is_remote(path):
        f = open(storage.local_path(path), "rb", buffering=-1 if whole else 0)
        now = os.fstat(f.fileno()).st_size
        if now < size:  # it shrank since the job listed it
            f.close()
            raise storage.shrunk(path, size, now)
        return f
    if not (whole and storage.scheme(path) in ("http", "https")):
        return RangeReader(path, at_least=size)
    fs, fs_path = storage.filesystem(path)
    stream = storage.retrying(path, "open", lambda: fs.open(fs_path, "rb", block_size=0))
    return SizedStream(stream, path, size) if size else stream


class SizedStream:
    """A whole stream whose length its listing said: one that ends short (a
    server that sent no length and closed mid-body) or long is an error,
    never a smaller or mixed file."""

    def __init__(self, f: Any, url: str, size: int) -> None:
        self._f, self.url, self.size = f, url, size
        self.name = url
        self._got = 0

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self._got += len(data)
        ended = (not data and n != 0) or n is None or n < 0
        if (ended and self._got != self.size) or self._got > self.size:
            raise storage.StorageError(
                f"{storage.redact(self.url)}: the transfer ended at byte {self._got}, the "
                f"server had said {self.size} (a dropped connection, or a changed file)",
                self.url)
        return data

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True

    def __getattr__(self, name: str) -> Any:  # what a decompressor may look at
        return getattr(self._f, name)

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> SizedStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
