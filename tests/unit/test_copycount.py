"""Row counts from pg_dump's plain output, however the stream is cut into chunks."""

import pytest

from enclave_backup.engines.postgresql.copycount import CopyCounter, table_name
from enclave_backup.stats import DumpStats

SCRIPT = (
    b"SET client_encoding = 'UTF8';\n"
    b"CREATE FUNCTION public.f() RETURNS void LANGUAGE sql AS $$\n"
    b"COPY public.decoy FROM stdin;\n"  # inside a function body: no TABLE DATA header before it
    b"$$;\n\n"
    b"--\n-- Data for Name: empty; Type: TABLE DATA; Schema: public; Owner: postgres\n--\n\n"
    b"COPY public.empty (n) FROM stdin;\n\\.\n\n\n"
    b"--\n-- Data for Name: Odd; Type: TABLE DATA; Schema: Odd \"S\"; Owner: postgres\n--\n\n"
    b"COPY \"Odd \"\"S\"\"\".\"Odd\" (a, b) FROM stdin;\n"
    b"\\N\t\\\\.\n"       # a value of a single backslash and dot: not the end marker
    b"\\.x\t\n"
    b"\t\\.\n"
    b"last\t" + b"y" * 300 + b"\n"
    b"\\.\n\n\n"
    b"--\n-- Data for Name: t; Type: TABLE DATA; Schema: public; Owner: postgres\n--\n\n"
    b"COPY public.t (id) FROM stdin;\n1\n2\n\\.\n\n"
    b"SELECT pg_catalog.lo_create('16385');\n"
)
EXPECTED = {"public.empty": 0, '"Odd ""S"""."Odd"': 4, "public.t": 2}


def count(chunks) -> dict:
    stats = DumpStats()
    counter = CopyCounter(stats)
    for chunk in chunks:
        counter.feed(chunk)
    counter.finish()
    assert stats.current_rows == 0 and stats.current_table == ""
    return stats.tables


def test_whole_script():
    assert count([SCRIPT]) == EXPECTED


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 7])
def test_every_chunk_size(size):
    assert count([SCRIPT[i:i + size] for i in range(0, len(SCRIPT), size)]) == EXPECTED


def test_every_single_cut():
    for cut in range(1, len(SCRIPT)):
        assert count([SCRIPT[:cut], SCRIPT[cut:]]) == EXPECTED, cut


def test_progress_follows_the_table_being_streamed():
    stats = DumpStats()
    counter = CopyCounter(stats)
    head = SCRIPT[:SCRIPT.index(b"2\n\\.")]
    counter.feed(head)
    assert stats.current_table == "public.t" and stats.current_rows == 1


def test_output_ending_inside_data_is_an_error():
    counter = CopyCounter(DumpStats())
    counter.feed(SCRIPT[:SCRIPT.index(b"last")])
    with pytest.raises(ValueError, match="ended inside the data"):
        counter.finish()


@pytest.mark.parametrize("line, name", [
    (b"COPY public.t (a) FROM stdin;", "public.t"),
    (b'COPY "we.ird"."ta ""b"" le" (a) FROM stdin;', '"we.ird"."ta ""b"" le"'),
    (b'COPY a."b.c" (a) FROM stdin;', 'a."b.c"'),
    (b'COPY "a.b".c (a) FROM stdin;', '"a.b".c'),
    (b'COPY public."user" (a) FROM stdin;', "public.user"),
    (b"COPY public.no_columns  FROM stdin;", "public.no_columns"),
])
def test_table_names(line, name):
    assert table_name(line) == name


def test_a_copy_line_cut_by_a_newline_in_a_quoted_name_is_counted():
    script = (b"--\n-- Data for Name: new line; Type: TABLE DATA; Schema: public; Owner: postgres\n--\n\n"
              b'COPY public."new\nline" ("col\numn", b) FROM stdin;\n1\t2\n3\t4\n\\.\n\n'
              b"--\n-- Data for Name: t; Type: TABLE DATA; Schema: public; Owner: postgres\n--\n\n"
              b"COPY public.t (id) FROM stdin;\n1\n\\.\n")
    expected = {'public."new\nline"': 2, "public.t": 1}
    for cut in range(1, len(script)):
        assert count([script[:cut], script[cut:]]) == expected, cut
