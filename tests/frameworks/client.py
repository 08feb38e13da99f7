"""Sends requests with httpx, as an application would, and prints what it
read: one JSON line per request with the status, the headers, and the body
as httpx decoded it (`json` is null when it did not parse).

Usage: python client.py BASE_URL REQUESTS_JSON, where REQUESTS_JSON is a
list of {"method", "path", "json"?, "headers"?}."""
import json
import sys

import httpx

base, requests = sys.argv[1], json.loads(sys.argv[2])
with httpx.Client(base_url=base, timeout=10) as client:
    for r in requests:
        resp = client.request(
            r["method"], r["path"], json=r.get("json"), headers=r.get("headers") or {}
        )
        try:
            body = resp.json()
        except ValueError:
            body = None
        print(
            json.dumps(
                {
                    "status": resp.status_code,
                    "headers": {k.lower(): v for k, v in resp.headers.items()},
                    "json": body,
                    "sent_accept_encoding": resp.request.headers.get("accept-encoding"),
                }
            ),
            flush=True,
        )
