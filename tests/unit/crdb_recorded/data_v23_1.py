"""A v23.1 server: data comes from COPY (SELECT ...) TO STDOUT in PostgreSQL text format.

Version string shape: `SELECT version()` / crdb_internal.node_build_info "Build" field,
e.g. "CockroachDB CCL v22.1.0 (x86_64-pc-linux-gnu, built 2022/05/23 16:27:47, go1.17.6)".
AS OF SYSTEM TIME takes the DECIMAL that cluster_logical_timestamp() returns (wall time in
nanoseconds, 10-digit logical part): https://www.cockroachlabs.com/docs/v23.1/as-of-system-time
COPY ... TO STDOUT (text format, 23.1+): https://www.cockroachlabs.com/docs/stable/copy
"""

VERSION = "CockroachDB CCL v23.1.11 (x86_64-pc-linux-gnu, built 2023/09/27 20:08:41, go1.19.10)"
TIMESTAMP = "1695846521123456789.0000000003"

ODD = '"sc1"."Odd ""Name"" x"'
ODD_COLUMNS = '"id", "Mixed Case", "it\'s", "secret", "state", "payload", "ratio"'

# Statement -> the rows the server streams back (each one text-format line).
COPY_OUT = {
    'COPY (SELECT "x", "y", "z" FROM "public"."full_test") TO STDOUT': [b"1\t2\t3\n"],
    'COPY (SELECT "x", "y", "z" FROM "public"."parent") TO STDOUT': [b"1\t2\t3\n", b"4\t\\N\t6\n"],
    'COPY (SELECT "id", "v" FROM "public"."s_tbl") TO STDOUT': [b"1\t10\n", b"42\t20\n"],
    'COPY (SELECT "a" FROM "public"."t") TO STDOUT': [b"7\n"],
    f"COPY (SELECT {ODD_COLUMNS} FROM {ODD}) TO STDOUT": [
        b"1\tTab\\there\tline\\nbreak\ts3cr3t\topen\t\\\\x00ff\tNaN\n",
        b"2\t\\\\.\t\t\\N\tclosed\t\\\\x\t-0\n",
        "3\tZażółć 🐘\tit's\t\\N\t\\N\t\\N\t1.5e-323\n".encode(),
    ],
}
