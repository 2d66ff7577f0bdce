"""Rows as CockroachDB returns them for `SELECT col::STRING, ..., encode(bytes_col, 'hex')`.

Values and their server text come from CockroachDB's own tests:
- pkg/sql/copy/testdata/copy_to_text @ 8693921710ce227b23860f16738c0c1f38e8450e: the
  STRING values of table `t` (tab, pipes, newline, NULL, backslash, double quote, empty)
  and the BYTES value '\\xdeadbeef';
- pkg/sql/logictest/testdata/logic_test/json @ 3b84c4e9c28b28a7dd03e87b029beaecc6b2adb0:
  `SELECT '"abc\\n123"'::JSON` prints "abc\\n123", `'{"a": "b"}'::JSONB::STRING` prints
  {"a": "b"} (the JSON text a STRING cast gives, which the JSONB cast parses back);
- FLOAT8 text 'NaN' / '-0' / '1.5e-323' and enum labels as in
  pkg/sql/logictest/testdata/logic_test/float and .../enums.
These are exactly the values COPY text corrupts on 23.1+ (cockroach#167309): the BYTES
value and JSONB strings with escapes.

`SELECT version()` strings: the shape of crdb_internal.node_build_info's "Build" field
(https://www.cockroachlabs.com/docs/v24.1/cluster-settings and every release's notes).
"""

VERSIONS = {
    "21.2": "CockroachDB CCL v21.2.17 (x86_64-unknown-linux-gnu, built 2022/10/17 17:03:42, go1.16.6)",
    "22.2": "CockroachDB CCL v22.2.14 (x86_64-pc-linux-gnu, built 2023/09/14 18:26:27, go1.19.10)",
    "23.1": "CockroachDB CCL v23.1.11 (x86_64-pc-linux-gnu, built 2023/09/27 20:08:41, go1.19.10)",
    "24.1": "CockroachDB CCL v24.1.0 (x86_64-pc-linux-gnu, built 2024/05/15 21:28:29, go1.22.2)",
    "25.2": "CockroachDB CCL v25.2.0 (x86_64-pc-linux-gnu, built 2025/05/12 14:01:37, go1.23.7 X:nocoverageredesign)",
    "25.3": "CockroachDB CCL v25.3.0 (x86_64-pc-linux-gnu, built 2025/08/11 17:52:10, go1.23.7 X:nocoverageredesign)",
}
TIMESTAMP = "1695846521123456789.0000000003"

ODD = '"sc1"."Odd ""Name"" x"'
ODD_SELECT = ('"id"::STRING, "Mixed Case"::STRING, "it\'s"::STRING, "secret"::STRING, '
              '"state"::STRING, encode("payload", \'hex\'), "ratio"::STRING')
DOCS_SELECT = '"id"::STRING, "t"::STRING, "j"::STRING, encode("b", \'hex\')'

# Statement -> rows (all text or NULL).
SELECT_ROWS = {
    'SELECT "x"::STRING, "y"::STRING, "z"::STRING FROM "public"."full_test"': [("1", "2", "3")],
    'SELECT "x"::STRING, "y"::STRING, "z"::STRING FROM "public"."parent"': [
        ("1", "2", "3"), ("4", None, "6")],
    'SELECT "id"::STRING, "v"::STRING FROM "public"."s_tbl"': [("1", "10"), ("42", "20")],
    'SELECT "a"::STRING FROM "public"."t"': [("7",)],
    f"SELECT {DOCS_SELECT} FROM \"public\".\"docs\"": [
        ("1", "a tab\t separates us", '"abc\\n123"', "deadbeef"),
        ("2", "some pipe || characters", '{"a": "b"}', "00ff"),
        ("3", "new line chars!\n ok?", '{"q": "say \\"hi\\"\\\\"}', ""),
        ("4", None, None, None),
        ("5", "a backslash IS\\NT a biggie", '"\\\\N"', "5c4e"),
        ("6", 'a quote " character should not be escaped', "[1, \"hello\", {\"a\": [\"foo\", {\"b\": 3}]}]", None),
        ("7", "", "null", None),
    ],
    f"SELECT {ODD_SELECT} FROM {ODD}": [
        ("1", "Tab\there", "line\nbreak", "s3cr3t", "open", "00ff", "NaN"),
        ("2", "\\.", "", None, "closed", "", "-0"),
        ("3", "Zażółć 🐘", "it's", None, None, None, "1.5e-323"),
    ],
}
