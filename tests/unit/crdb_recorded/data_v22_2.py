"""A v22.2 server (no COPY TO): rows read as server-side text, `col::STRING`, BYTES as hex.

Version string shape as in data_v23_1.py. The values are what CockroachDB's STRING casts
print: FLOAT8 'NaN' / '-0' / shortest exact digits, encode(bytes, 'hex') digits, enum labels.
COPY FROM in `cockroach sql` scripts exists from 22.1, but COPY TO only from 23.1:
https://www.cockroachlabs.com/docs/v22.2/copy-from
"""

VERSION = "CockroachDB CCL v22.2.14 (x86_64-pc-linux-gnu, built 2023/09/14 18:26:27, go1.19.10)"
TIMESTAMP = "1695846521123456789.0000000000"

ODD = '"sc1"."Odd ""Name"" x"'
ODD_SELECT = ('"id"::STRING, "Mixed Case"::STRING, "it\'s"::STRING, "secret"::STRING, '
              '"state"::STRING, encode("payload", \'hex\'), "ratio"::STRING')

# Statement -> rows (all text or NULL).
SELECT_ROWS = {
    'SELECT "x"::STRING, "y"::STRING, "z"::STRING FROM "public"."full_test"': [("1", "2", "3")],
    'SELECT "x"::STRING, "y"::STRING, "z"::STRING FROM "public"."parent"': [
        ("1", "2", "3"), ("4", None, "6")],
    'SELECT "id"::STRING, "v"::STRING FROM "public"."s_tbl"': [("1", "10"), ("42", "20")],
    'SELECT "a"::STRING FROM "public"."t"': [("7",)],
    f"SELECT {ODD_SELECT} FROM {ODD}": [
        ("1", "Tab\there", "line\nbreak", "s3cr3t", "open", "00ff", "NaN"),
        ("2", "\\.", "", None, "closed", "", "-0"),
        ("3", "Zażółć 🐘", "it's", None, None, None, "1.5e-323"),
    ],
}
