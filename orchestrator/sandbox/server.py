"""The simulator over real HTTP: the server, its request handler and the foreground command."""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from orchestrator.sandbox.config import SandboxConfig
from orchestrator.sandbox.ledger import Ledger
from orchestrator.sandbox.simulator import API_PREFIX, Clock, Simulator


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    # Benchmarks open many connections at once; the default backlog of 5 drops SYNs.
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], simulator: Simulator) -> None:
        self.simulator = simulator
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def close_connections(self) -> None:
        """Cut kept-alive connections, whose threads would otherwise wait for their clients."""
        with self.connections_lock:
            for connection in self.connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
            self.connections.clear()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client hanging up (timeouts, faults) is normal here, not worth a traceback.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Header and body go out in one write, but keep small answers from waiting on Nagle.
    disable_nagle_algorithm = True
    # An idle kept-alive connection is closed after this, so stray clients cannot pin threads.
    timeout = 120
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.server.connections_lock:
                self.server.connections.discard(self.connection)

    def _serve(self) -> None:
        length = self.headers.get("Content-Length", "").strip()
        body = self.rfile.read(int(length)) if length.isdigit() else b""
        reply = self.server.simulator.handle(self.command, self.path, body, self.headers)
        if reply.drop:
            self.close_connection = True
            return
        if reply.delay:
            time.sleep(reply.delay)
        head = [
            f"HTTP/1.1 {reply.status} {HTTPStatus(reply.status).phrase}",
            f"Content-Type: {reply.content_type}",
            f"Content-Length: {len(reply.body)}",
        ]
        if reply.retry_after is not None:
            head.append(f"Retry-After: {reply.retry_after}")
        if self.close_connection:
            head.append("Connection: close")
        try:
            self.wfile.write("\r\n".join(head).encode("latin-1") + b"\r\n\r\n" + reply.body)
        except OSError:
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: thousands of requests a second would drown the terminal."""


class SandboxServer:
    """The simulator behind a real HTTP server; binds on construction, serves after ``start``."""

    def __init__(
        self,
        config: SandboxConfig | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        clock: Clock = time.time,
        simulator: Simulator | None = None,
    ) -> None:
        """``simulator`` (tests): serve this one, e.g. a subclass that alters answers; its
        config is then the server's."""
        self.simulator = simulator or Simulator(config or SandboxConfig(), clock=clock)
        self.config = self.simulator.config
        self._httpd = _HTTPServer((host, port), self.simulator)
        self._thread: threading.Thread | None = None

    @property
    def ledger(self) -> Ledger:
        """The books, for in-process tests; other processes read ``/_sandbox/ledger``."""
        return self.simulator.ledger

    @property
    def root_url(self) -> str:
        """Scheme, host and port, where the admin endpoints live."""
        host, port = self._httpd.server_address[:2]
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else str(host)
        return f"http://{shown}:{port}"

    @property
    def url(self) -> str:
        """The base URL a client is given, API prefix included."""
        return self.root_url + API_PREFIX

    def start(self) -> SandboxServer:
        """Serve on a daemon thread."""
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="legitsms-sandbox",
            daemon=True,
        )
        self._thread.start()
        return self

    def serve(self) -> None:
        """Serve on this thread until ``stop`` is called from another (or Ctrl-C)."""
        self._httpd.serve_forever(poll_interval=0.05)

    def stop(self) -> None:
        """Stop serving, cut open connections and release the port."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.close_connections()
        self._httpd.server_close()

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def serve_forever(
    config: SandboxConfig,
    host: str = "127.0.0.1",
    port: int = 8765,
    *,
    ready: Callable[[SandboxServer], None] | None = None,
) -> None:
    """Serve in the foreground until Ctrl-C; ``ready`` is called once the port is bound."""
    server = SandboxServer(config, host, port)
    if ready is not None:
        ready(server)
    try:
        server.serve()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
