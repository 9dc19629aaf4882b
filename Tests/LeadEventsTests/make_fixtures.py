#!/usr/bin/env python3
"""Writes the lead event fixture corpus under Fixtures/ (one JSON-lines file per category).

Each line is one Kafka record and its expected verdict:
  name        unique name
  shape       the shape the record is meant to have: structured, binary or plain
  value       the record value as text, or valueBase64 for bytes that are not UTF-8, or valueNull
  headers     [{"key": ..., "value": text | null} or {"key": ..., "valueBase64": ...}]
  expect      valid, malformed, unsupported-type or schema-violation
  pointers    for schema-violation: the JSON Pointers the violations must name, in any order
  dedupeKey   for valid records: the expected dedupe key (plain keys computed here, independently of
              the Swift code, with Python's json module: sorted keys, compact separators, no ASCII escaping)

Run it from anywhere: python3 Tests/LeadEventsTests/make_fixtures.py
With --fuzz-seeds DIR it writes each fixture's value to a file in DIR instead (the seeds of `make fuzz`).
"""

import base64
import copy
import hashlib
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "Fixtures")

FULL = {
    "firstName": "Jane",
    "lastName": "Doe",
    "gender": "FEMALE",
    "email": "jane.doe@example.com",
    "language": "EN",
    "phoneNumbers": [{"number": "+33 6 12 34 56 78", "type": "MOBILE"}, {"number": "01.23.45.67.89", "type": "LANDLINE"}],
    "message": "Interested in the flat, please call me after 6 pm.",
    "classifiedId": "12ABCDEFGHJK",
    "submittedDate": "2025-03-14T09:26:53Z",
}
MINIMAL = {
    "lastName": "Doe",
    "email": "test@example.com",
    "phoneNumbers": [{"number": "+33511223344"}],
    "message": "message",
    "classifiedId": "75ZYXWVUTSRQ",
    "submittedDate": "2025-03-14T09:26:53+01:00",
}
DEFINED = ["firstName", "lastName", "gender", "email", "language", "phoneNumbers", "message", "classifiedId", "submittedDate"]
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

files = {}
counter = [0]


def dump(value):
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def content_key(request):
    defined = {k: request[k] for k in DEFINED if k in request}
    defined["phoneNumbers"] = [{k: p[k] for k in ("number", "type") if k in p} for p in defined["phoneNumbers"]]
    canonical = json.dumps(defined, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def add(category, name, shape, expect, value=None, value_bytes=None, value_null=False, headers=None,
        pointers=None, dedupe_key=None):
    record = {"name": name, "shape": shape}
    if value_null:
        record["valueNull"] = True
    elif value_bytes is not None:
        try:
            record["value"] = value_bytes.decode("utf-8")
        except UnicodeDecodeError:
            record["valueBase64"] = base64.b64encode(value_bytes).decode("ascii")
    else:
        record["value"] = value if isinstance(value, str) else dump(value)
    record["headers"] = headers or []
    record["expect"] = expect
    if pointers is not None:
        record["pointers"] = pointers
    if dedupe_key is not None:
        record["dedupeKey"] = dedupe_key
    files.setdefault(category, []).append(record)


def event(data, **attributes):
    counter[0] += 1
    envelope = {"specversion": "1.0", "id": f"evt-{counter[0]:04d}", "source": "/portals/slg", "type": "lead.submitted"}
    envelope.update(attributes)
    if data is not None:
        envelope["data"] = data
    return {k: v for k, v in envelope.items() if v is not DROP}


DROP = object()


def ce_headers(event_id, **overrides):
    headers = {"ce_specversion": "1.0", "ce_id": event_id, "ce_source": "/portals/lci", "ce_type": "lead.submitted"}
    headers.update(overrides)
    return [{"key": k, "value": v} for k, v in headers.items() if v is not DROP]


def nested_arrays(depth):
    value = "x"
    for _ in range(depth):
        value = [value]
    return value


def with_field(base, field, value):
    lead = copy.deepcopy(base)
    if value is DROP:
        del lead[field]
    else:
        lead[field] = value
    return lead


def valid_structured(name, data, **attributes):
    envelope = event(data, **attributes)
    add("valid", name, "structured", "valid", envelope, dedupe_key=f"ce:{envelope['source']}|{envelope['id']}")


def valid_plain(name, data, text=None):
    add("valid", name, "plain", "valid", text if text is not None else data, dedupe_key=content_key(data))


def invalid_field(name, field, value, pointer=None, plain_too=False):
    """A request with one field changed, in the structured shape (and the plain one when asked)."""
    lead = with_field(FULL, field, value)
    pointer = pointer if pointer is not None else "/" + field
    add("invalid-request", name, "structured", "schema-violation", event(lead), pointers=["/data" + pointer])
    if plain_too:
        add("invalid-request", name + "-plain", "plain", "schema-violation", lead, pointers=[pointer])


def build():
    # Valid events, in all three shapes and with every optional field.
    valid_structured("structured-full", FULL, time="2025-03-14T09:26:54Z", datacontenttype="application/json",
                     traceparent=TRACEPARENT)
    valid_structured("structured-minimal", MINIMAL)
    valid_structured("structured-datacontenttype-params", MINIMAL, datacontenttype="Application/JSON; charset=utf-8")
    valid_structured("structured-extension-attributes", MINIMAL, partitionkey="abc", portal="SLG-FRA")
    valid_structured("structured-time-offset", MINIMAL, time="2025-03-14T10:26:54.123456+01:00")
    valid_structured("structured-traceparent-version-01", MINIMAL,
                     traceparent="01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00")
    valid_plain("plain-full", FULL)
    valid_plain("plain-minimal", MINIMAL)
    valid_plain("plain-pretty-printed", MINIMAL, json.dumps(MINIMAL, indent=2))
    valid_plain("plain-unknown-fields-ignored", dict(MINIMAL, portalRef="x-1", score=12.5, tags=["a"], extra=None))
    valid_plain("plain-escaped-strings", dict(MINIMAL, message="Line 1\nLine 2\t\"quoted\" \\ / \u00e9 \u2028 \U0001F600"),
                json.dumps(dict(MINIMAL, message="Line 1\nLine 2\t\"quoted\" \\ / \u00e9 \u2028 \U0001F600")))
    valid_plain("plain-control-characters", dict(MINIMAL, message="bell\u0007 nul\u0000 del\u007f"))
    for shape_name, headers in [
        ("binary-minimal", ce_headers("bin-0001")),
        ("binary-full", ce_headers("bin-0002", ce_time="2025-03-14T09:26:54Z") + [{"key": "traceparent", "value": TRACEPARENT},
                                                                                    {"key": "content-type", "value": "application/json"},
                                                                                    {"key": "ce_partitionkey", "value": "k"}]),
    ]:
        data = FULL if shape_name == "binary-full" else MINIMAL
        event_id = headers[1]["value"]
        add("valid", shape_name, "binary", "valid", data, headers=headers, dedupe_key=f"ce:/portals/lci|{event_id}")
    add("valid", "plain-with-traceparent-header", "plain", "valid", MINIMAL,
        headers=[{"key": "traceparent", "value": TRACEPARENT}], dedupe_key=content_key(MINIMAL))
    add("valid", "plain-with-unrelated-headers", "plain", "valid", MINIMAL,
        headers=[{"key": "portal", "value": "SLG"}, {"key": "binary", "valueBase64": base64.b64encode(b"\xff\x00").decode()},
                 {"key": "empty", "value": None}], dedupe_key=content_key(MINIMAL))

    for gender in ["MALE", "FEMALE", "OTHER", "PREFER_NOT_TO_DISCLOSE"]:
        valid_structured(f"gender-{gender.lower()}", with_field(MINIMAL, "gender", gender))
    for language in ["DE", "EN", "ES", "FR", "HE", "IT", "NL", "PT", "RU"]:
        valid_structured(f"language-{language.lower()}", with_field(MINIMAL, "language", language))
    names = {
        "cyrillic": "Дмитрий", "hebrew": "אברהם", "arabic": "محمد", "chinese": "王小明", "japanese": "さくら",
        "greek": "Ελένη", "accented": "Zoë-Amélie", "emoji": "Jane \U0001F60A", "apostrophe": "O'Brien",
    }
    for label, text in names.items():
        valid_structured(f"first-name-{label}", with_field(MINIMAL, "firstName", text))
    valid_structured("last-name-length-1", with_field(MINIMAL, "lastName", "D"))
    valid_structured("last-name-length-100", with_field(MINIMAL, "lastName", "a" * 100))
    valid_structured("first-name-length-1", with_field(MINIMAL, "firstName", "J"))
    valid_structured("first-name-length-100", with_field(MINIMAL, "firstName", "b" * 100))
    valid_structured("first-name-100-cyrillic-code-points", with_field(MINIMAL, "firstName", "Ж" * 100))
    valid_structured("first-name-100-emoji-code-points", with_field(MINIMAL, "firstName", "\U0001F600" * 100))
    # 50 letters each followed by a combining acute accent: 50 graphemes, 100 code points.
    valid_structured("first-name-100-code-points-combining", with_field(MINIMAL, "firstName", "e\u0301" * 50))
    valid_structured("message-empty", with_field(MINIMAL, "message", ""))
    valid_structured("message-long", with_field(MINIMAL, "message", "Bonjour, " * 2000))
    for label, number in {
        "digits-7": "0123456", "plus-digits-7": "+0123456", "max-22": "0" * 22, "plus-max-22": "+" + "1" * 22,
        "parentheses": "(0)1 23 45 67 89", "slashes": "030/1234567", "dots": "01.23.45.67.89",
        "dashes": "555-123-4567", "leading-space": " 5551234",
    }.items():
        valid_structured(f"phone-{label}", with_field(MINIMAL, "phoneNumbers", [{"number": number}]))
    valid_structured("phone-three-items", with_field(MINIMAL, "phoneNumbers", [
        {"number": "0611223344", "type": "MOBILE"}, {"number": "0144556677", "type": "LANDLINE"}, {"number": "+4930123456"}]))
    valid_structured("phone-item-unknown-field", with_field(MINIMAL, "phoneNumbers", [{"number": "0611223344", "ext": "12"}]))
    for label, classified in {"all-nines": "999999999999", "edge-letters": "00ANPZ123456", "digits-1-9": "01123456789Z"}.items():
        valid_structured(f"classified-id-{label}", with_field(MINIMAL, "classifiedId", classified))
    for label, date in {
        "lower-t-z": "2025-03-14t09:26:53z", "fraction": "2025-03-14T09:26:53.5Z", "negative-offset": "2025-03-14T09:26:53-05:30",
        "leap-day-2024": "2024-02-29T00:00:00Z", "leap-day-2000": "2000-02-29T23:59:59+14:00", "offset-23-59": "2025-12-31T23:59:59+23:59",
        "year-0001": "0001-01-01T00:00:00Z",
    }.items():
        valid_structured(f"date-{label}", with_field(MINIMAL, "submittedDate", date))
    for label, email in {
        "plus-tag": "jane+leads@example.co.uk", "single-label-domain": "admin@localhost", "digits": "123@456.fr",
        "special-atext": "o'hara!#$%&*=?^_`{|}~@example.org", "hyphen-domain": "jane@mail-server.example.com",
    }.items():
        valid_structured(f"email-{label}", with_field(MINIMAL, "email", email))
    # The event object and data are two levels; 30 nested arrays reach the bound of 32 exactly.
    valid_structured("nesting-at-bound", dict(MINIMAL, extra=nested_arrays(30)))

    # One broken constraint at a time, in the structured shape (so the conformance test covers it).
    for field in ["lastName", "email", "phoneNumbers", "message", "classifiedId", "submittedDate"]:
        invalid_field(f"missing-{field}", field, DROP, plain_too=field in ("lastName", "email"))
    wrong_types = {"number": 42, "boolean": True, "null": None, "array": ["x"], "object": {"x": 1}}
    for field in ["firstName", "lastName", "gender", "email", "language", "message", "classifiedId", "submittedDate"]:
        for label in (["number", "null"] if field not in ("lastName", "email") else list(wrong_types)):
            invalid_field(f"{field}-{label}", field, wrong_types[label])
    for label in ["string", "null", "object"]:
        invalid_field(f"phoneNumbers-{label}", "phoneNumbers", {"string": "0611223344", "null": None, "object": {"number": "0611223344"}}[label])
    for field in ["firstName", "lastName"]:
        invalid_field(f"{field}-empty", field, "", plain_too=True)
        invalid_field(f"{field}-length-101", field, "a" * 101)
    invalid_field("first-name-101-code-points-combining", "firstName", "e\u0301" * 50 + "x")
    invalid_field("first-name-101-emoji", "firstName", "\U0001F600" * 101)
    invalid_field("last-name-101-cyrillic", "lastName", "Ж" * 101)
    for field, values in {
        "gender": {"lower-case": "female", "unknown": "UNKNOWN", "empty": "", "trailing-space": "MALE "},
        "language": {"lower-case": "fr", "unknown": "GR", "empty": "", "three-letters": "FRA"},
        "email": {
            "empty": "", "no-at": "jane.example.com", "two-ats": "jane@doe@example.com", "no-local": "@example.com",
            "no-domain": "jane@", "space": "jane doe@example.com", "domain-space": "jane@exa mple.com",
            "double-dot": "jane..doe@example.com", "leading-dot": ".jane@example.com", "trailing-dot-local": "jane.@example.com",
            "domain-hyphen-start": "jane@-example.com", "domain-empty-label": "jane@example..com", "domain-trailing-dot": "jane@example.com.",
            "trailing-newline": "jane@example.com\n", "control-char": "jane\u0001@example.com", "non-ascii": "jané@example.com",
            "local-65": "a" * 65 + "@example.com", "display-name": "Jane <jane@example.com>",
        },
        "classifiedId": {
            "letter-o": "12ABCDEFGHJO", "digit-0-in-tail": "12ABCDEFGH0K", "lower-case": "12abcdefghjk", "length-11": "12ABCDEFGHJ",
            "length-13": "12ABCDEFGHJKL", "letters-prefix": "ABABCDEFGHJK", "trailing-newline": "12ABCDEFGHJK\n",
            "trailing-space": "12ABCDEFGHJ ", "empty": "", "fullwidth-digits": "１２ABCDEFGHJK",
        },
        "submittedDate": {
            "no-offset": "2025-03-14T09:26:53", "space-separator": "2025-03-14 09:26:53Z", "date-only": "2025-03-14",
            "feb-29-2023": "2023-02-29T10:00:00Z", "feb-29-1900": "1900-02-29T10:00:00Z", "feb-30": "2024-02-30T10:00:00Z",
            "apr-31": "2025-04-31T10:00:00Z", "month-13": "2025-13-01T10:00:00Z", "month-00": "2025-00-10T10:00:00Z",
            "day-00": "2025-01-00T10:00:00Z", "hour-24": "2025-03-14T24:00:00Z", "minute-60": "2025-03-14T09:60:00Z",
            "second-60": "2025-03-14T09:26:60Z", "offset-24": "2025-03-14T09:26:53+24:00", "offset-no-colon": "2025-03-14T09:26:53+0100",
            "offset-short": "2025-03-14T09:26:53+01", "empty-fraction": "2025-03-14T09:26:53.Z", "year-0000": "0000-01-01T00:00:00Z",
            "unix-seconds": "1741944413", "trailing-newline": "2025-03-14T09:26:53Z\n", "two-digit-year": "25-03-14T09:26:53Z",
            "utc-word": "2025-03-14T09:26:53 UTC", "empty": "",
        },
    }.items():
        for label, value in values.items():
            invalid_field(f"{field}-{label}", field, value, plain_too=(field == "email" and label == "no-at"))
    for label, number in {
        "too-short": "012345", "too-long": "0" * 23, "plus-too-long": "+" + "0" * 23, "letters": "06ABCD1234",
        "ends-with-parenthesis": "(01) 2345 678)", "double-plus": "++33612345678", "plus-in-middle": "0033+612345678",
        "trailing-newline": "0611223344\n", "trailing-space": "0611223344 ", "empty": "", "fullwidth-digits": "０６１１２２３３４４",
        "tab": "06\t11223344",
    }.items():
        invalid_field(f"phone-{label}", "phoneNumbers", [{"number": number}], "/phoneNumbers/0/number")
    invalid_field("phone-empty-array", "phoneNumbers", [])
    invalid_field("phone-item-string", "phoneNumbers", ["0611223344"], "/phoneNumbers/0")
    invalid_field("phone-item-null", "phoneNumbers", [None], "/phoneNumbers/0")
    invalid_field("phone-missing-number", "phoneNumbers", [{"type": "MOBILE"}], "/phoneNumbers/0/number")
    invalid_field("phone-number-integer", "phoneNumbers", [{"number": 611223344}], "/phoneNumbers/0/number")
    invalid_field("phone-type-unknown", "phoneNumbers", [{"number": "0611223344", "type": "FAX"}], "/phoneNumbers/0/type")
    invalid_field("phone-type-lower-case", "phoneNumbers", [{"number": "0611223344", "type": "mobile"}], "/phoneNumbers/0/type")
    invalid_field("phone-second-item-bad", "phoneNumbers", [{"number": "0611223344"}, {"number": "x"}], "/phoneNumbers/1/number")
    several = dict(FULL, email="not-an-email", classifiedId="12abc", phoneNumbers=[{"number": "1"}, {"type": "HOME"}])
    del several["lastName"]
    add("invalid-request", "several-violations", "structured", "schema-violation", event(several),
        pointers=["/data/lastName", "/data/email", "/data/phoneNumbers/0/number", "/data/phoneNumbers/1/number",
                  "/data/phoneNumbers/1/type", "/data/classifiedId"])
    add("invalid-request", "empty-object-plain", "plain", "schema-violation", {},
        pointers=["/lastName", "/email", "/phoneNumbers", "/message", "/classifiedId", "/submittedDate"])

    # The CloudEvents envelope.
    def envelope(name, expect, pointers=None, data=MINIMAL, **attributes):
        add("invalid-envelope", name, "structured", expect, event(data, **attributes), pointers=pointers)

    envelope("specversion-0.3", "schema-violation", ["/specversion"], specversion="0.3")
    envelope("specversion-number", "schema-violation", ["/specversion"], specversion=1.0)
    envelope("specversion-null", "schema-violation", ["/specversion"], specversion=None)
    envelope("id-missing", "schema-violation", ["/id"], id=DROP)
    envelope("id-empty", "schema-violation", ["/id"], id="")
    envelope("id-number", "schema-violation", ["/id"], id=17)
    envelope("source-missing", "schema-violation", ["/source"], source=DROP)
    envelope("source-empty", "schema-violation", ["/source"], source="")
    envelope("type-missing", "schema-violation", ["/type"], type=DROP)
    envelope("type-number", "schema-violation", ["/type"], type=3)
    envelope("type-other", "unsupported-type", type="lead.updated")
    envelope("type-case", "unsupported-type", type="Lead.Submitted")
    envelope("time-no-offset", "schema-violation", ["/time"], time="2025-03-14T09:26:53")
    envelope("time-not-a-date", "schema-violation", ["/time"], time="yesterday")
    envelope("datacontenttype-text", "schema-violation", ["/datacontenttype"], datacontenttype="text/plain")
    envelope("datacontenttype-jsonx", "schema-violation", ["/datacontenttype"], datacontenttype="application/jsonx")
    envelope("datacontenttype-cloudevents", "schema-violation", ["/datacontenttype"], datacontenttype="application/cloudevents+json")
    envelope("traceparent-upper-case", "schema-violation", ["/traceparent"], traceparent=TRACEPARENT.upper())
    envelope("traceparent-zero-trace", "schema-violation", ["/traceparent"], traceparent="00-" + "0" * 32 + "-b7ad6b7169203331-01")
    envelope("traceparent-zero-parent", "schema-violation", ["/traceparent"], traceparent="00-0af7651916cd43dd8448eb211c80319c-" + "0" * 16 + "-01")
    envelope("traceparent-version-ff", "schema-violation", ["/traceparent"], traceparent="ff" + TRACEPARENT[2:])
    envelope("traceparent-short", "schema-violation", ["/traceparent"], traceparent=TRACEPARENT[:-1])
    envelope("data-missing", "schema-violation", ["/data"], data=None)
    for label, data in {"null": None, "array": [MINIMAL], "string": json.dumps(MINIMAL), "number": 1}.items():
        add("invalid-envelope", f"data-{label}", "structured", "schema-violation", dict(event(MINIMAL), data=data),
            pointers=["/data"])
    envelope("envelope-and-data-violations", "schema-violation", ["/id", "/data/email"], id="", data=with_field(MINIMAL, "email", "x"))

    # Binary mode: the attributes are headers.
    def binary(name, expect, headers, data=MINIMAL, pointers=None):
        add("invalid-envelope", name, "binary", expect, data, headers=headers, pointers=pointers)

    binary("binary-missing-id", "schema-violation", ce_headers(DROP, ce_id=DROP), pointers=[""])
    binary("binary-empty-source", "schema-violation", ce_headers("b-2", ce_source=""), pointers=[""])
    binary("binary-null-id", "schema-violation", ce_headers(None), pointers=[""])
    binary("binary-specversion-0.3", "schema-violation", ce_headers("b-3", ce_specversion="0.3"), pointers=[""])
    binary("binary-missing-specversion", "schema-violation", ce_headers("b-4", ce_specversion=DROP), pointers=[""])
    binary("binary-type-other", "unsupported-type", ce_headers("b-5", ce_type="lead.deleted"))
    binary("binary-missing-type", "schema-violation", ce_headers("b-6", ce_type=DROP), pointers=[""])
    binary("binary-bad-time", "schema-violation", ce_headers("b-7", ce_time="2025-02-30T00:00:00Z"), pointers=[""])
    binary("binary-bad-traceparent", "schema-violation", ce_headers("b-8") + [{"key": "traceparent", "value": "nope"}], pointers=[""])
    binary("binary-only-extension-header", "schema-violation", [{"key": "ce_partitionkey", "value": "p"}], pointers=[""])
    binary("binary-bad-data", "schema-violation", ce_headers("b-9"), data=with_field(MINIMAL, "language", "XX"), pointers=["/language"])
    binary("binary-id-invalid-utf8", "malformed", [{"key": "ce_id", "valueBase64": base64.b64encode(b"id-\xc3\x28").decode()}]
           + ce_headers("x", ce_id=DROP))
    binary("binary-duplicate-id-header", "malformed", ce_headers("b-10") + [{"key": "ce_id", "value": "b-11"}])
    binary("binary-data-not-object", "malformed", ce_headers("b-12"), data=[MINIMAL])

    # Bytes that are not one acceptable JSON object.
    def malformed(name, shape, raw, **extra):
        if isinstance(raw, str):
            raw = raw.encode("utf-8")
        add("malformed", name, shape, "malformed", value_bytes=raw, **extra)

    full_text = dump(event(FULL))
    malformed("truncated-structured", "structured", full_text[:-1])
    malformed("not-json-text", "plain", "hello, world")
    malformed("empty-value", "plain", b"")
    malformed("whitespace-only", "plain", b"  \n\t ")
    malformed("top-level-array", "plain", dump([MINIMAL]))
    malformed("top-level-string", "plain", '"lead"')
    malformed("top-level-number", "plain", "42")
    malformed("top-level-null", "plain", "null")
    malformed("trailing-garbage", "structured", full_text + "x")
    malformed("two-objects", "plain", dump(MINIMAL) + dump(MINIMAL))
    malformed("single-quotes", "plain", "{'lastName': 'Doe'}")
    malformed("trailing-comma", "structured", full_text[:-1] + ",}")
    malformed("comment", "plain", "/* lead */" + dump(MINIMAL))
    malformed("nan", "structured", full_text[:-1] + ',"score":NaN}')
    malformed("leading-zero-number", "structured", full_text[:-1] + ',"score":012}')
    malformed("bare-minus", "structured", full_text[:-1] + ',"score":-}')
    malformed("raw-newline-in-string", "structured", full_text.replace("please call me", "please\ncall me"))
    malformed("raw-tab-in-string", "structured", full_text.replace("please call me", "please\tcall me"))
    malformed("bad-escape", "structured", full_text.replace("please call me", "please \\x call me"))
    malformed("short-unicode-escape", "structured", full_text.replace("please call me", "please \\u12 call me"))
    malformed("utf8-bom", "plain", b"\xef\xbb\xbf" + dump(MINIMAL).encode())
    malformed("invalid-utf8-continuation", "structured", full_text.encode().replace(b"Jane", b"J\xc3\x28ne"))
    malformed("invalid-utf8-overlong", "structured", full_text.encode().replace(b"Jane", b"J\xc0\xafne"))
    malformed("invalid-utf8-surrogate", "structured", full_text.encode().replace(b"Jane", b"J\xed\xa0\x80ne"))
    malformed("invalid-utf8-above-max", "structured", full_text.encode().replace(b"Jane", b"J\xf4\x90\x80\x80ne"))
    malformed("invalid-utf8-truncated-at-end", "plain", dump(MINIMAL).encode() + b"\xe2\x82")
    malformed("invalid-utf8-ff", "plain", b"\xff" + dump(MINIMAL).encode())
    malformed("latin1-name", "structured", full_text.replace("Jane", "Zo\u00eb").encode("latin-1"))
    malformed("binary-garbage", "plain", bytes(range(256)))
    malformed("lone-high-surrogate-escape", "structured", full_text.replace("please call me", "please \\ud83d call me"))
    malformed("lone-low-surrogate-escape", "structured", full_text.replace("please call me", "please \\ude00 call me"))
    malformed("duplicate-key", "structured", full_text[:-1] + ',"id":"evt-dup"}')
    malformed("duplicate-key-in-data", "plain", dump(MINIMAL)[:-1] + ',"email":"other@example.com"}')
    malformed("nesting-over-bound", "structured", dump(event(dict(MINIMAL, extra=nested_arrays(31)))))
    malformed("nesting-very-deep", "plain", "[" * 20000 + "]" * 20000)
    malformed("nesting-unclosed", "plain", "{\"a\":" * 10000)
    malformed("too-large-valid-otherwise", "structured", dump(event(with_field(MINIMAL, "message", "x" * 70000))))
    malformed("too-large-padding", "plain", dump(MINIMAL) + " " * 65536)
    add("malformed", "tombstone", "plain", "malformed", value_null=True)
    huge_invalid = dump(event(with_field(MINIMAL, "lastName", "y" * 70000)))
    malformed("too-large-and-invalid", "structured", huge_invalid)
    # Huge but inside the limit: a long message is fine, a long name is a schema violation.
    add("invalid-request", "huge-last-name-inside-limit", "structured", "schema-violation",
        event(with_field(MINIMAL, "lastName", "z" * 60000)), pointers=["/data/lastName"])
    valid_structured("huge-message-inside-limit", with_field(MINIMAL, "message", "m" * 60000))


def write_fuzz_seeds(directory):
    """Each fixture's value as one file, the starting corpus of `make fuzz`."""
    os.makedirs(directory, exist_ok=True)
    for records in files.values():
        for record in records:
            if "valueBase64" in record:
                raw = base64.b64decode(record["valueBase64"])
            else:
                raw = record.get("value", "").encode("utf-8")
            with open(os.path.join(directory, record["name"]), "wb") as out:
                out.write(raw)


def main():
    build()
    if len(sys.argv) == 3 and sys.argv[1] == "--fuzz-seeds":
        write_fuzz_seeds(sys.argv[2])
        return
    names = [record["name"] for records in files.values() for record in records]
    assert len(names) == len(set(names)), [n for n in names if names.count(n) > 1]
    os.makedirs(OUT, exist_ok=True)
    for category, records in files.items():
        with open(os.path.join(OUT, f"{category}.jsonl"), "w", encoding="utf-8") as out:
            for record in records:
                out.write(json.dumps(record, ensure_ascii=True) + "\n")
    print(f"{len(names)} fixtures in {len(files)} files")


if __name__ == "__main__":
    main()
