#!/usr/bin/env python3
"""Independent verdicts for the structured-shape fixtures, from Python's jsonschema.

usage: conformance.py SCHEMA FIXTURES_DIR
Prints one JSON object: fixture name -> "valid" or "invalid". A value that is not UTF-8 or not JSON
(RFC 8259: NaN and Infinity are not JSON) is "invalid". Exits 3 when the date-time format checker is
missing, since every verdict on dates would then be meaningless.
"""

import base64
import glob
import json
import os
import sys

import jsonschema


def reject_constant(name):
    raise ValueError(f"{name} is not JSON")


def main():
    schema_path, fixtures_dir = sys.argv[1], sys.argv[2]
    with open(schema_path, encoding="utf-8") as handle:
        schema = json.load(handle)
    jsonschema.Draft202012Validator.check_schema(schema)
    format_checker = jsonschema.FormatChecker()
    if "date-time" not in format_checker.checkers or "email" not in format_checker.checkers:
        print("jsonschema's format checker lacks date-time (install rfc3339-validator)", file=sys.stderr)
        sys.exit(3)
    validator = jsonschema.Draft202012Validator(schema, format_checker=format_checker)
    verdicts = {}
    for path in sorted(glob.glob(os.path.join(fixtures_dir, "*.jsonl"))):
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                fixture = json.loads(line)
                if fixture["shape"] != "structured":
                    continue
                if "valueBase64" in fixture:
                    raw = base64.b64decode(fixture["valueBase64"])
                else:
                    raw = fixture["value"].encode("utf-8", "surrogatepass")
                try:
                    instance = json.loads(raw.decode("utf-8"), parse_constant=reject_constant)
                except (UnicodeDecodeError, ValueError, RecursionError):
                    verdicts[fixture["name"]] = "invalid"
                    continue
                verdicts[fixture["name"]] = "valid" if validator.is_valid(instance) else "invalid"
    json.dump(verdicts, sys.stdout, sort_keys=True)


if __name__ == "__main__":
    main()
