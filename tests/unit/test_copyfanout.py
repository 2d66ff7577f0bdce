"""How one COPY block's pieces are dealt out to loaders: whole rows only, none lost (no I/O)."""

from __future__ import annotations

import queue
import random

import pytest

from enclave_backup.copyfanout import _Block


class _Loader:
    """A loader's queue and start, without a connection or thread behind it."""

    def __init__(self):
        self.pieces: queue.Queue = queue.Queue()
        self.error = None
        self.statements: list[bytes] = []

    def start(self, statement: bytes) -> None:
        self.statements.append(statement)

    def received(self) -> bytes:
        out = b""
        while not self.pieces.empty():
            out += bytes(self.pieces.get())
        return out


def _pieces(data: bytes, rng: random.Random) -> list[bytes]:
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(1, 40))))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]


@pytest.mark.parametrize("seed", range(25))
def test_every_row_reaches_exactly_one_loader_whole_and_in_order(seed):
    rng = random.Random(seed)
    rows = [b"%d\t%s" % (i, b"v" * rng.choice([0, 3, 50, 5000])) for i in range(rng.randint(1, 300))]
    data = b"".join(row + b"\n" for row in rows)
    loaders = [_Loader() for _ in range(rng.randint(1, 4))]
    _Block(loaders, b"COPY t FROM stdin").feed(_pieces(data, rng))

    seen = []
    for loader in loaders:
        got = loader.received()
        assert got == b"" or got.endswith(b"\n")
        part = got.split(b"\n")[:-1]
        assert [rows.index(r) for r in part] == sorted(rows.index(r) for r in part)  # order kept
        seen += part
        assert loader.statements in ([], [b"COPY t FROM stdin"])  # each starts its COPY once
    assert sorted(seen) == sorted(rows)


def test_a_block_without_rows_still_runs_its_copy_once():
    loaders = [_Loader(), _Loader()]
    _Block(loaders, b"COPY t FROM stdin").feed([])
    assert [lo.statements for lo in loaders] == [[b"COPY t FROM stdin"], []]
