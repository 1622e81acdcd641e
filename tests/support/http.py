"""A tiny HTTP GET for the tests: status, headers and body, errors as replies."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass

AGENT = "booru-tagger-tests/1.0"


@dataclass
class Reply:
    status: int
    headers: dict
    body: bytes

    def json(self):
        return json.loads(self.body)


def http_get(url: str, headers: dict | None = None) -> Reply:
    """GET without redirects followed automatically raising; returns status, headers, body."""
    req = urllib.request.Request(url, headers={"User-Agent": AGENT, **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return Reply(r.status, dict(r.headers), r.read())
    except urllib.error.HTTPError as e:
        return Reply(e.code, dict(e.headers), e.read())
