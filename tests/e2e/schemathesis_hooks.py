"""Schemathesis hooks for kiln's OpenAPI test (tests/e2e/openapi.rs).

SDK 4.8 streams a batch's items as NDJSON: one JSON item per line. The
document gives the items' schema as an array; this sends each generated
element as a line, as the SDK does. A value that is not a list goes as
one line, so kiln's refusal of it is tested too.
"""

import json

import schemathesis


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx, value):
    items = value if isinstance(value, list) else [value]
    return "".join(json.dumps(item) + "\n" for item in items).encode("utf-8")
