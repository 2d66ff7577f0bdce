"""The stored object in signed segments: each one checked before any of its bytes is replayed.

Without them a restore reads the whole object once to match its sha256 before the first
statement runs, then again to replay it. With the sha256 of every SEGMENT_BYTES of the stored
bytes in the (signed) manifest, the replay reads the object once: a thread downloads and checks
the next segments while the statements of the last one run, and a segment that does not match
stops the replay before any of its bytes reaches the server. What ran before it came from
checked bytes, into the scratch database only, which the failed restore drops.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from typing import Iterator

from .errors import IntegrityError

SEGMENT_BYTES = 16 << 20
# 4096 sha256s are 270 KiB of manifest (of its 1 MiB, see catalog.MAX_MANIFEST_BYTES): backups
# stored larger than 64 GiB record none and are read twice, as before segments.
MAX_SEGMENTS = 4096
READ_BYTES = 256 << 10
PREFETCH = 2  # checked segments waiting for the replay: memory stays bounded
JOIN_SECONDS = 1.0


class Segmenter:
    """The sha256 of each SEGMENT_BYTES of the bytes it is given, as the backup stores them."""

    def __init__(self, size: int = SEGMENT_BYTES):
        self.size = size
        self.digests: list[str] = []
        self._hash = hashlib.sha256()
        self._filled = 0

    def update(self, data) -> None:
        view = memoryview(data)
        while view:
            take = min(len(view), self.size - self._filled)
            self._hash.update(view[:take])
            self._filled += take
            view = view[take:]
            if self._filled == self.size:
                self._close_segment()

    def _close_segment(self) -> None:
        self.digests.append(self._hash.hexdigest())
        self._hash, self._filled = hashlib.sha256(), 0

    def result(self) -> dict | None:
        """The manifest's `segments`, or None when there are too many to record."""
        if self._filled:
            self._close_segment()
        if len(self.digests) > MAX_SEGMENTS:
            return None
        return {"size": self.size, "sha256": self.digests}


def covers(segments: dict | None, stored_size: int) -> bool:
    """Whether the manifest's segments describe an object of `stored_size` bytes, every byte of it."""
    return bool(segments) and stored_size > 0 and len(segments["sha256"]) == -(-stored_size // segments["size"])


class Checked:
    """The object's bytes, read ahead by a thread and yielded a checked segment at a time."""

    def __init__(self, read, segments: dict, where: str):
        self._read, self.where = read, where
        self.size, self.expected = segments["size"], segments["sha256"]
        self.whole = hashlib.sha256()  # of every byte read, on this thread, for the manifest's sha256
        self._ready: queue.Queue = queue.Queue(PREFETCH)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fetch, name="segment-reader", daemon=True)
        self._thread.start()

    def _fetch(self) -> None:
        try:
            offset = 0
            for number, expected in enumerate(self.expected):
                pieces, filled, digest = [], 0, hashlib.sha256()
                while filled < self.size and (raw := self._read(min(READ_BYTES, self.size - filled))):
                    digest.update(raw)
                    self.whole.update(raw)
                    pieces.append(raw)
                    filled += len(raw)
                if digest.hexdigest() != expected:
                    raise IntegrityError(
                        f"{self.where} does not match its manifest ({filled} bytes with sha256 {digest.hexdigest()} "
                        f"at offset {offset}, segment {number + 1} of {len(self.expected)}; the manifest says "
                        f"{expected}): it is damaged or was altered; none of these bytes was run, and the live "
                        "database is unchanged")
                offset += filled
                if not self._put(pieces):
                    return
                if filled < self.size:
                    break  # the last segment; the size check below tells a short object
            if self._read(1):
                raise IntegrityError(f"{self.where} holds more bytes than its manifest's segments: it was altered; "
                                     "the live database is unchanged")
            self._put(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the replaying thread
            self._put(exc)

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[bytes]:
        while (item := self._ready.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield from item

    def close(self) -> None:
        # The reader may sit in a read from a stalled store (until the client's read timeout): a
        # failing restore does not wait for it. Stopped, it hands nothing on; the daemon thread
        # ends with its read or with the process.
        self._stop.set()
        self._thread.join(timeout=JOIN_SECONDS)
