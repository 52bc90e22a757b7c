"""Issue 11: an answer is read up to a bound (max_response_bytes), never whole.

A 50 MB answer was read into memory whole (about 250 MB at peak, with its decoding). These
tests send one over real HTTP from a local server and measure the client's peak allocation
with tracemalloc (no timing)."""

from __future__ import annotations

import threading
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import tenacity.nap

from orchestrator.config import Settings
from orchestrator.errors import MalformedResponse, ProviderUnavailable, UnusableOrder
from orchestrator.provider.client import LegitSMSClient
from orchestrator.provider.transport import MAX_RESPONSE_BYTES
from orchestrator.provider.types import Order
from tests.test_client import SECRET, USA, WHATSAPP

MB = 1024 * 1024
HUGE = 50 * MB
PIECE = 64 * 1024
PEAK_LIMIT = 20 * MB  # with a 1 MiB bound; the whole 50 MB answer cost ~250 MB


@pytest.fixture(autouse=True)
def _no_sleeps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tenacity.nap, "time", SimpleNamespace(sleep=lambda seconds: None))


@dataclass
class Huge:
    """What the local server answers: a head, then padding up to ``size`` bytes, then a tail."""

    status: int = 200
    head: bytes = b'{"balance": "1", "pad": "'
    tail: bytes = b'"}'
    size: int = HUGE
    length_header: bool = True  # else the body ends when the connection closes
    encoded: bytes | None = None  # sent as it is, with Content-Encoding: gzip

    def body(self) -> Iterator[bytes]:
        if self.encoded is not None:
            yield self.encoded
            return
        yield self.head
        padding = self.size - len(self.head) - len(self.tail)
        piece = b"x" * PIECE
        while padding > 0:
            yield piece[: min(PIECE, padding)]
            padding -= PIECE
        yield self.tail

    def length(self) -> int:
        return len(self.encoded) if self.encoded is not None else self.size


@dataclass
class Served:
    url: str
    answer: Huge
    requests: list[str]


@pytest.fixture
def server() -> Iterator[Served]:
    served = Served("", Huge(), [])

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self._answer()

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            self._answer()

        def _answer(self) -> None:
            served.requests.append(f"{self.command} {self.path.rsplit('/', 1)[-1]}")
            answer = served.answer
            self.send_response(answer.status)
            self.send_header("Content-Type", "application/json")
            if answer.encoded is not None:
                self.send_header("Content-Encoding", "gzip")
            if answer.length_header:
                self.send_header("Content-Length", str(answer.length()))
            else:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            try:
                for piece in answer.body():
                    self.wfile.write(piece)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client stopped reading: what the bound is for

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    served.url = f"http://127.0.0.1:{httpd.server_address[1]}/wp-json/legitsms/v2"
    yield served
    httpd.shutdown()
    httpd.server_close()


def _client(served: Served, **options: Any) -> LegitSMSClient:
    return LegitSMSClient(served.url, SECRET, connect_timeout=5.0, read_timeout=30.0, **options)


def peak_of(call: Callable[[], object]) -> tuple[object, int]:
    """What ``call`` returned or raised, and the most memory it held at once (bytes)."""
    tracemalloc.start()
    try:
        try:
            outcome: object = call()
        except Exception as exc:
            outcome = exc
        return outcome, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_the_default_bound_is_one_mebibyte_and_the_setting_says_so() -> None:
    assert MAX_RESPONSE_BYTES == MB
    assert Settings().max_response_bytes == MB


@pytest.mark.parametrize("length_header", [True, False], ids=["content-length", "until-close"])
def test_a_50_mb_answer_is_malformed_and_read_only_up_to_the_bound(
    server: Served, length_header: bool
) -> None:
    server.answer = Huge(length_header=length_header)
    with _client(server, attempts=2) as client:
        outcome, peak = peak_of(client.balance)

    assert isinstance(outcome, MalformedResponse), repr(outcome)
    assert f"larger than {MB} bytes" in str(outcome)
    assert peak < PEAK_LIMIT, f"peak {peak / MB:.1f} MB"
    assert server.requests == ["GET balance"] * 2  # a read is still retried, as for any blip


def test_a_small_gzip_body_that_inflates_to_50_mb_is_cut_off_at_the_bound(
    server: Served,
) -> None:
    packer = zlib.compressobj(wbits=zlib.MAX_WBITS | 16)
    bomb = packer.compress(b'{"balance": "1", "pad": "' + b"0" * HUGE) + packer.flush()
    assert len(bomb) < MB
    server.answer = Huge(encoded=bomb)
    with _client(server, attempts=1) as client:
        outcome, peak = peak_of(client.balance)

    assert isinstance(outcome, MalformedResponse), repr(outcome)
    assert f"larger than {MB} bytes" in str(outcome)
    assert peak < PEAK_LIMIT, f"peak {peak / MB:.1f} MB"


def test_a_50_mb_order_answer_is_in_doubt_and_never_resent(server: Served) -> None:
    # It may have bought a number: malformed (in doubt), not a refusal, and sent once. The
    # order id at its start cannot be trusted without the rest of the answer.
    server.answer = Huge(head=b'{"status": "success", "order_id": "777", "msg": "')
    with _client(server, attempts=3) as client:
        outcome, peak = peak_of(lambda: client.order(WHATSAPP, USA))

    assert type(outcome) is MalformedResponse, repr(outcome)
    assert not isinstance(outcome, UnusableOrder)
    assert peak < PEAK_LIMIT, f"peak {peak / MB:.1f} MB"
    assert server.requests == ["POST order"]


def test_a_50_mb_5xx_page_is_still_provider_unavailable(server: Served) -> None:
    server.answer = Huge(status=503, head=b"<html>", tail=b"</html>")
    with _client(server, attempts=1) as client:
        outcome, peak = peak_of(client.balance)

    assert type(outcome) is ProviderUnavailable, repr(outcome)
    assert peak < PEAK_LIMIT, f"peak {peak / MB:.1f} MB"


def test_the_client_is_usable_again_after_an_answer_it_cut_off(server: Served) -> None:
    with _client(server, attempts=1) as client:
        with pytest.raises(MalformedResponse):
            client.balance()
        server.answer = Huge(size=len(b'{"balance": "1", "pad": ""}'))
        assert client.balance() == Decimal("1")


# -- the bound itself, with a streamed scripted answer ------------------------------------

ORDER_HEAD = b'{"order_id": "777", "phone": "12025550199", "cost": 2.66, "msg": "'


def _streamed(body: bytes, headers: dict[str, str] | None = None) -> httpx.MockTransport:
    def pieces() -> Iterator[bytes]:
        for start in range(0, len(body), 1000):
            yield body[start : start + 1000]

    return httpx.MockTransport(
        lambda request: httpx.Response(200, content=pieces(), headers=headers)
    )


def _padded(size: int) -> bytes:
    return ORDER_HEAD + b"x" * (size - len(ORDER_HEAD) - 2) + b'"}'


def _gzip(data: bytes) -> bytes:
    packer = zlib.compressobj(wbits=zlib.MAX_WBITS | 16)
    return packer.compress(data) + packer.flush()


@pytest.mark.parametrize("gzip", [False, True], ids=["plain", "gzip"])
def test_an_answer_of_exactly_the_bound_is_read_and_one_byte_more_is_not(gzip: bool) -> None:
    def order(size: int) -> object:
        body = _padded(size)
        transport = (
            _streamed(_gzip(body), {"content-encoding": "gzip"}) if gzip else _streamed(body)
        )
        client = LegitSMSClient(
            "http://provider.test", SECRET, max_response_bytes=4096, transport=transport
        )
        try:
            return client.order(WHATSAPP, USA)
        except MalformedResponse as exc:
            return exc

    assert order(4096) == Order(order_id="777", phone="12025550199", cost=Decimal("2.66"))
    refused = order(4097)
    assert type(refused) is MalformedResponse
    assert "larger than 4096 bytes" in str(refused)


@pytest.mark.parametrize("encoding", ["br", "gzip, gzip", "compress"])
def test_an_answer_in_an_encoding_we_cannot_bound_is_malformed(encoding: str) -> None:
    transport = _streamed(_padded(200), {"content-encoding": encoding})
    client = LegitSMSClient("http://provider.test", SECRET, transport=transport)

    with pytest.raises(MalformedResponse):
        client.order(WHATSAPP, USA)


def test_answers_are_asked_for_uncompressed() -> None:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"balance": "1"})

    LegitSMSClient("http://provider.test", SECRET, transport=httpx.MockTransport(record)).balance()

    assert seen[0].headers["accept-encoding"] == "identity"


def test_the_setting_reaches_the_client_and_below_1024_is_refused() -> None:
    from pydantic import ValidationError

    from orchestrator.lifecycle.wiring import make_client

    client = make_client(Settings(api_key=SECRET, max_response_bytes=2048), None)
    assert client._max_response_bytes == 2048
    with pytest.raises(ValidationError):
        Settings(max_response_bytes=100)
