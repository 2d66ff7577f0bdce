"""Compression stages. Each takes SQL text with write() and hands stored bytes to a sink.

gzip compresses independent blocks on a thread pool (ISA-L and zlib release the GIL),
pigz-style; the concatenated gzip members are one valid .gz file for gunzip, zcat and Python
alike. Levels 1-3 use ISA-L's deflate (isal), 4-9 zlib's; both read back with ISA-L's inflate.
zstd uses the zstandard library's own worker threads.
"""

from __future__ import annotations

import os
import zlib
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import zstandard
from isal import isal_zlib

from .errors import IntegrityError

Sink = Callable[[bytes], None]

# ISA-L level 2 compressed prose-like SQL about 5x faster per core than zlib 3, to the
# size of zlib 6 (scripts/bench.py); zstd is smaller still.
DEFAULT_LEVELS = {"gzip": 2, "zstd": 3}
ISAL_TOP_LEVEL = 3  # ISA-L has levels 0-3; above that, zlib
GZIP_BLOCK = 1 << 20
# zstd's default job for level 3 is 8 MiB with a pool of several; 4 MiB jobs halve its
# buffers (about 50 -> 25 MiB) at the same ratio on dumps.
ZSTD_JOB = 4 << 20


def worker_count(threads: int) -> int:
    return threads if threads > 0 else max(1, os.cpu_count() or 1)


def _gzip_member(block: bytes, level: int) -> bytes:
    lib = isal_zlib if level <= ISAL_TOP_LEVEL else zlib
    engine = lib.compressobj(level, lib.DEFLATED, 31)
    return engine.compress(block) + engine.flush()


class PassThrough:
    def __init__(self, sink: Sink):
        self.sink = sink

    def write(self, data: bytes) -> None:
        self.sink(data)

    def close(self) -> None:
        pass


class ParallelGzip:
    def __init__(self, sink: Sink, level: int, threads: int):
        self.sink = sink
        self.level = level
        self.workers = worker_count(threads)
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="gzip")
        self._pending: deque = deque()
        self._chunks: list[bytes] = []
        self._size = 0

    def write(self, data: bytes) -> None:
        # Joined once per block (a lone 1 MiB write is not copied at all).
        self._chunks.append(data if isinstance(data, bytes) else bytes(data))
        self._size += len(data)
        if self._size >= GZIP_BLOCK:
            self._submit()

    def _submit(self) -> None:
        block = b"".join(self._chunks)
        self._chunks, self._size = [], 0
        self._pending.append(self._pool.submit(_gzip_member, block, self.level))
        # Two blocks per worker in flight keep every core busy with bounded memory.
        while len(self._pending) > 2 * self.workers:
            self.sink(self._pending.popleft().result())

    def close(self) -> None:
        if self._chunks or not self._pending:
            self._submit()
        while self._pending:
            self.sink(self._pending.popleft().result())
        self._pool.shutdown()

    def abandon(self) -> None:
        for future in self._pending:
            future.cancel()
        self._pool.shutdown(wait=True)


class Zstd:
    def __init__(self, sink: Sink, level: int, threads: int):
        self.sink = sink
        params = zstandard.ZstdCompressionParameters.from_level(level, threads=worker_count(threads),
                                                               job_size=ZSTD_JOB)
        self._engine = zstandard.ZstdCompressor(compression_params=params).compressobj()

    def write(self, data: bytes) -> None:
        out = self._engine.compress(data)
        if out:
            self.sink(out)

    def close(self) -> None:
        out = self._engine.flush()
        if out:
            self.sink(out)


def compressor(kind: str, sink: Sink, level: int | None = None, threads: int = 0):
    if kind == "none":
        return PassThrough(sink)
    level = level or DEFAULT_LEVELS[kind]
    if kind == "gzip":
        return ParallelGzip(sink, level, threads)
    if kind == "zstd":
        return Zstd(sink, level, threads)
    raise ValueError(f"unknown compression {kind!r}")


class _Frames:
    """Decompresses concatenated gzip members or zstd frames and notices one cut short."""

    def __init__(self, new_engine, errors, name: str):
        self._new_engine = new_engine
        self._errors = errors
        self._name = name
        self._engine = new_engine()
        self._inside = False  # fed bytes of a member whose end has not come yet

    def decompress(self, data: bytes) -> bytes:
        out = []
        while data:
            self._inside = True
            try:
                out.append(self._engine.decompress(data))
            except self._errors as exc:
                raise IntegrityError(f"the {self._name} stream is corrupt: {exc}") from None
            if not self._engine.eof:
                break
            self._inside = False
            data = self._engine.unused_data
            self._engine = self._new_engine()
        return b"".join(out)

    def finish(self) -> None:
        if self._inside:
            raise IntegrityError(f"the {self._name} stream ends in the middle (truncated object)")


class _Plain:
    def decompress(self, data: bytes) -> bytes:
        return data

    def finish(self) -> None:
        pass


def decompressor(kind: str):
    """An object with decompress(bytes) -> bytes and finish() that raises on truncation."""
    if kind == "gzip":
        return _Frames(lambda: isal_zlib.decompressobj(31), isal_zlib.error, "gzip")
    if kind == "zstd":
        return _Frames(lambda: zstandard.ZstdDecompressor().decompressobj(), zstandard.ZstdError, "zstd")
    return _Plain()
