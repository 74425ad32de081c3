"""Real-socket proxies for the tests: media-type rewriting for the Elasticsearch client, and faults.

ElasticsearchProxy sits between the official elasticsearch client and osmem (OpenSearch
compatible): it rewrites the client's vendor media types to plain JSON, answers with the product
header the client checks, and can inject faults (HTTP statuses, dropped connections, concurrent
writes that make the server answer 409). TcpCutProxy forwards raw TCP (PostgreSQL) and cuts the
connection after a given number of client bytes.
"""

from __future__ import annotations

import contextlib
import http.client
import re
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

VENDOR = re.compile(r"application/vnd\.elasticsearch\+(json|x-ndjson);\s*compatible-with=\d+")

# A fault hook sees (method, path, body) and returns None (forward), ("status", code),
# "drop" (close without forwarding) or "drop_after" (forward, then close without answering).
FaultHook = Callable[[str, str, bytes], Any]


class ElasticsearchProxy:
    def __init__(self, upstream: str):
        self.upstream = urlsplit(upstream)
        self.fault: FaultHook | None = None
        self.requests: list[tuple[str, str]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                proxy.requests.append((self.command, self.path))
                action = proxy.fault(self.command, self.path, body) if proxy.fault else None
                if action == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if isinstance(action, tuple) and action[0] == "status":
                    payload = (
                        b'{"error":{"type":"injected","reason":"fault injected by test proxy"},"status":%d}'
                        % action[1]
                    )
                    self._reply(action[1], payload, "application/json")
                    return
                headers = {
                    k: VENDOR.sub(lambda m: f"application/{m.group(1)}", v)
                    for k, v in self.headers.items()
                    if k.lower() in ("content-type", "accept", "authorization")
                }
                upstream = http.client.HTTPConnection(proxy.upstream.netloc, timeout=60)
                upstream.request(self.command, self.path, body=body or None, headers=headers)
                response = upstream.getresponse()
                data = response.read()
                upstream.close()
                if action == "drop_after":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self._reply(response.status, data, response.getheader("Content-Type") or "application/json")

            def _reply(self, status: int, data: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("X-Elastic-Product", "Elasticsearch")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class TcpCutProxy:
    """Forwards TCP to a server; with cut_after set, drops every connection once that many client
    bytes have passed in total (counted across connections)."""

    def __init__(self, host: str, port: int):
        self.target = (host, port)
        self.cut_after: int | None = None
        self.client_bytes = 0
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, from_client: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if from_client:
                    with self.lock:
                        if self.cut_after is not None and self.client_bytes + len(data) > self.cut_after:
                            keep = max(0, self.cut_after - self.client_bytes)
                            self.client_bytes = self.cut_after
                            if keep:
                                dst.sendall(data[:keep])
                            break
                        self.client_bytes += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def close(self) -> None:
        self.closed = True
        self.listener.close()
