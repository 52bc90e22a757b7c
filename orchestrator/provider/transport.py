"""The answer's bytes: read through the proxy the environment names, and never more of them than
a bound, however the answer is compressed."""

from __future__ import annotations

import urllib.parse
import urllib.request
import zlib

import httpx

from orchestrator.errors import MalformedResponse
from orchestrator.provider.answers import shown

# The most of one answer that is read: the largest documented answer (/services, /prices of a
# service sold in every country) is tens of kilobytes. A longer answer is not kept in memory.
MAX_RESPONSE_BYTES = 1024 * 1024


def read_bounded(path: str, response: httpx.Response, limit: int) -> bytes | None:
    """The answer's body, decompressed; None once it grows past ``limit`` bytes, having read
    only about that much. A gzip or deflate body is inflated a bounded piece at a time, so a
    small compressed answer cannot expand to gigabytes either."""
    if response.is_stream_consumed:  # already in memory (an httpx.MockTransport answer)
        return response.content if len(response.content) <= limit else None
    codings = [
        coding.strip().lower()
        for coding in response.headers.get("content-encoding", "").split(",")
        if coding.strip().lower() not in ("", "identity")
    ]
    inflater = None
    if codings in (["gzip"], ["x-gzip"], ["deflate"]):
        inflater = zlib.decompressobj(zlib.MAX_WBITS | 32)  # a gzip or zlib header
    elif codings:
        raise MalformedResponse(f"{path}: answer in an unsupported encoding {shown(codings)}")
    chunks: list[bytes] = []
    size = 0
    try:
        for raw in response.iter_raw():
            pending = raw
            while pending:
                if inflater is None:
                    piece, pending = pending, b""
                else:
                    piece = inflater.decompress(pending, limit - size + 1)
                    pending = inflater.unconsumed_tail
                size += len(piece)
                if size > limit:
                    return None
                chunks.append(piece)
    except zlib.error:
        raise MalformedResponse(
            f"{path}: answer cannot be decoded (broken content encoding)"
        ) from None
    return b"".join(chunks)


def proxy_for(url: str) -> str | None:
    """The proxy the environment (``HTTPS_PROXY``, ``NO_PROXY``...) names for ``url``, if any."""
    parts = urllib.parse.urlsplit(url)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy or (parts.hostname and urllib.request.proxy_bypass(parts.hostname)):
        return None
    return proxy
