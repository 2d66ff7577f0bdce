"""Compression stages. Each takes SQL text with write() and hands stored bytes to a sink.

gzip compresses independent blocks on a thread pool (ISA-L and zlib release the GIL),
pigz-style; the concatenated gzip members are one valid .gz file for gunzip, zcat and Python
alike. Levels 1-3 use ISA-L's deflate (isal), 4-9 zlib's; both read back with ISA-L's inflate.
zstd uses the zstandard library's own worker threads.
"""

from __future__ import annotations

import io
import math
import os
import zlib
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Iterator

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


# Compression memory grows with the worker count (zstd: 119 MiB peak at 4 workers, 173 at 16,
# docs/performance.md, "Memory"); past 4 the upload, not the compressor, is what a backup waits for.
MAX_AUTO_THREADS = 4
# Restore hands the SQL splitter at most this much per piece, however well the data compressed
# (a zstd block of 4 bytes can stand for 128 KiB).
OUTPUT_CHUNK = 1 << 20
CGROUP = Path("/sys/fs/cgroup")


def cgroup_cpu_limit(root: Path = CGROUP) -> float | None:
    """CPUs the container's CPU quota allows (cgroup v2 cpu.max or v1 cfs quota), None if unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 else quota / period
    except (OSError, ValueError):
        return None


def container_cpus() -> int:
    """CPUs this process may use: its affinity mask, lowered by the cgroup quota (a pod's CPU limit)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    if limit is not None:
        cpus = min(cpus, math.ceil(limit))
    return max(1, cpus)


def worker_count(threads: int) -> int:
    """Configured threads, else the container's CPUs capped at MAX_AUTO_THREADS (never the node's count)."""
    return threads if threads > 0 else min(MAX_AUTO_THREADS, container_cpus())


def _gzip_member(block: bytes, level: int) -> bytes:
    lib = isal_zlib if level <= ISAL_TOP_LEVEL else zlib
    engine = lib.compressobj(level, lib.DEFLATED, 31)
    return engine.compress(block) + engine.flush()


class Stage:
    """A compression stage as a `with` block: closed (the rest flushed to the sink) on a clean
    exit, abandoned (workers stopped, nothing more sent) when the block raises."""

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def abandon(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is not None:
            self.abandon()
            return
        try:
            self.close()
        except BaseException:
            self.abandon()
            raise


class PassThrough(Stage):
    def __init__(self, sink: Sink):
        self.sink = sink

    def write(self, data: bytes) -> None:
        self.sink(data)


class ParallelGzip(Stage):
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


class Zstd(Stage):
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


def compressor(kind: str, sink: Sink, level: int | None = None, threads: int = 0) -> Stage:
    if kind == "none":
        return PassThrough(sink)
    level = level or DEFAULT_LEVELS[kind]
    if kind == "gzip":
        return ParallelGzip(sink, level, threads)
    if kind == "zstd":
        return Zstd(sink, level, threads)
    raise ValueError(f"unknown compression {kind!r}")


class _ChunkReader(io.RawIOBase):
    """A file over an iterator of byte chunks, for zstandard's pull-based reader."""

    def __init__(self, chunks: Iterable[bytes]):
        self._chunks = iter(chunks)
        self._rest = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._rest:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._rest = memoryview(chunk)
        n = min(len(buffer), len(self._rest))
        buffer[:n] = self._rest[:n]
        self._rest = self._rest[n:]
        return n


def _gzip_pieces(chunks: Iterable[bytes]) -> Iterator[bytes]:
    engine = isal_zlib.decompressobj(31)
    inside = False  # fed bytes of a member whose end has not come yet
    for data in chunks:
        while data:
            inside = True
            try:
                out = engine.decompress(data, OUTPUT_CHUNK)
            except isal_zlib.error as exc:
                raise IntegrityError(f"the gzip stream is corrupt: {exc}") from None
            if out:
                yield out
            if engine.eof:  # the next gzip member (parallel gzip writes many)
                inside = False
                data = engine.unused_data
                engine = isal_zlib.decompressobj(31)
            else:
                data = engine.unconsumed_tail
    if inside:
        raise IntegrityError("the gzip stream ends in the middle (truncated object)")


def _zstd_pieces(chunks: Iterable[bytes]) -> Iterator[bytes]:
    # A cut-off zstd stream simply ends early here; the stored size and sha256 of the manifest,
    # checked before the last statement runs, are what tell a truncated object.
    reader = zstandard.ZstdDecompressor().stream_reader(_ChunkReader(chunks), read_size=256 * 1024,
                                                         read_across_frames=True)
    try:
        while out := reader.read(OUTPUT_CHUNK):
            yield out
    except zstandard.ZstdError as exc:
        raise IntegrityError(f"the zstd stream is corrupt: {exc}") from None


def decompressed(kind: str, chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The SQL text of stored `chunks`, in pieces of at most OUTPUT_CHUNK bytes whatever the ratio."""
    if kind == "gzip":
        return _gzip_pieces(chunks)
    if kind == "zstd":
        return _zstd_pieces(chunks)
    return iter(chunks)
