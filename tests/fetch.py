"""One plain HTTP GET for the tests that talk to an origin or an edge over a socket:
the status, the header fields and the body, for error statuses too."""

from __future__ import annotations

import urllib.error
import urllib.request


def fetch(url: str, timeout_s: float = 10.0, **headers: str) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, dict(response.headers.items()), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers.items()), error.read()
