"""JSON schemas of what this tool reads back from the bucket: manifests and verification records.

One check, in one place, before any field is used: a manifest that names a row count no
database can hold, or `tables` that is not a mapping, is refused with the field it got wrong
rather than crashing a command later (or passing a restore it should have stopped).
"""

from __future__ import annotations

import functools

# PostgreSQL and CockroachDB count rows and bytes in signed 64-bit integers.
MAX_COUNT = 2**63 - 1
_COUNT = {"type": "integer", "minimum": 0, "maximum": MAX_COUNT}
_TEXT = {"type": "string", "maxLength": 65536}

# Where a native backup's data is and which backup of the chain it is: the restore splices these
# into RESTORE, so each is held to the shape CockroachDB writes.
_NATIVE = {
    "type": "object",
    "required": ["collection", "folder", "type", "end_hlc", "end_time", "revision_history", "job_id"],
    "properties": {
        # The collection's key prefix in the bucket: a plain path, like ENCLAVE_BACKUP_PREFIX.
        "collection": {"type": "string", "minLength": 1, "maxLength": 900,
                       "pattern": "^(?!.*(^|/)\\.{1,2}(/|$))[^\\\\\\x00-\\x1f?#]+$"},
        "folder": {"type": "string", "pattern": "^/\\d{4}/\\d{2}/\\d{2}-\\d{6}\\.\\d{2}$"},
        "type": {"enum": ["full", "incremental"]},
        "end_hlc": {"type": "string", "pattern": "^\\d{1,20}(\\.\\d{1,10})?$"},
        "end_time": {"type": "string", "maxLength": 64},
        "revision_history": {"type": "boolean"},
        "job_id": _COUNT,
        "size_bytes": _COUNT,
        "rows": _COUNT,
    },
}

MANIFEST = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["format_version", "key", "database", "engine", "server_version", "started_at", "finished_at",
                 "compression", "stored_size", "sha256", "uncompressed_size"],
    "properties": {
        "format_version": {"type": "integer"},
        "key": {"type": "string", "minLength": 1, "maxLength": 1024},
        "database": {"type": "string", "minLength": 1, "maxLength": 1024},
        "engine": {"enum": ["postgresql", "cockroachdb"]},
        "server_version": _TEXT,
        "started_at": {"type": "string", "maxLength": 64},
        "finished_at": {"type": "string", "maxLength": 64},
        "compression": {"enum": ["gzip", "zstd", "none"]},
        "stored_size": _COUNT,
        "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
        "uncompressed_size": _COUNT,
        "tables": {"type": "object", "additionalProperties": _COUNT},
        "tool_version": _TEXT,
        "snapshot": _TEXT,
        "database_state": {"type": ["object", "null"]},
        "installation": _TEXT,
        "run_id": {"type": "string", "pattern": "^([0-9a-f]{8,32})?$"},
        "encryption": {
            "type": ["object", "null"],
            "required": ["scheme", "recipients"],
            "properties": {"scheme": {"const": "age"},
                           "recipients": {"type": "array", "items": _TEXT, "maxItems": 1000}},
        },
        "signature": {
            "type": ["object", "null"],
            "required": ["algorithm", "key_id", "value"],
            "properties": {"algorithm": _TEXT, "key_id": _TEXT, "value": _TEXT},
        },
        "method": {"enum": ["dump", "native"]},
        "segments": {
            "type": ["object", "null"],
            "required": ["size", "sha256"],
            "properties": {"size": {"type": "integer", "minimum": 65536, "maximum": 1 << 30},
                           "sha256": {"type": "array", "maxItems": 4096,
                                      "items": {"type": "string", "pattern": "^[0-9a-f]{64}$"}}},
        },
        "native": {"oneOf": [{"type": "null"}, _NATIVE]},
    },
    # A native manifest names where its data is; a dump's names nothing of the kind.
    "if": {"properties": {"method": {"const": "native"}}, "required": ["method"]},
    "then": {"required": ["native"], "properties": {"native": _NATIVE}},
    "else": {"properties": {"native": {"type": "null"}}},
}

RECORD = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["key", "verified_at", "passed"],
    "properties": {
        "key": {"type": "string", "maxLength": 1024},
        "verified_at": {"type": "string", "maxLength": 64},
        "passed": {"type": "boolean"},
        "exit_code": {"type": "integer", "minimum": 0, "maximum": 255},
        "error": _TEXT,
        "sha256": {"type": "string", "maxLength": 64},
        "tables": _COUNT,
        "rows": _COUNT,
        "duration_s": {"type": "number", "minimum": 0},
        "tool_version": _TEXT,
        "row_mismatches": {"type": "object",
                           "additionalProperties": {"type": "object", "additionalProperties": _COUNT}},
    },
}


@functools.lru_cache(maxsize=None)
def _validator(name: str):
    import jsonschema  # imported on first use: most commands read no manifest

    schema = {"manifest": MANIFEST, "record": RECORD}[name]
    return jsonschema.Draft202012Validator(schema)


def problem(data, name: str) -> str | None:
    """None if `data` fits schema `name` ("manifest" or "record"), else what is wrong, naming the field."""
    import jsonschema

    error = jsonschema.exceptions.best_match(_validator(name).iter_errors(data))
    if error is None:
        return None
    field = "/".join(str(p) for p in error.absolute_path)
    if error.validator == "required":  # the missing field is the message's subject, not a path
        missing = [f for f in error.validator_value if isinstance(error.instance, dict) and f not in error.instance]
        field = "/".join(filter(None, [field, missing[0] if missing else ""]))
        return f"field {field!r} is missing"
    shown = error.message if len(error.message) <= 200 else error.message[:200] + "..."
    return f"field {field or '(top level)'!r} is invalid: {shown}"
