"""The console's HTTP server: the standard library's threading server, GET and HEAD only.

    /             the page (HTML, reloads itself)
    /api/state    the same data as JSON

Read-only by construction: no route changes anything, and every other method is answered 405.
The page is served with a Content-Security-Policy that forbids loading anything (scripts, styles,
images, fonts) from anywhere, so even a future edit cannot quietly pull an asset from the
internet. Bound to a loopback address, requests must name a loopback host: a web page elsewhere
cannot use DNS rebinding to read partner names and budgets through the operator's browser.
"""

from __future__ import annotations

import ipaddress
import json
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from mshale_fl.console.page import render_page
from mshale_fl.console.state import ConsoleState
from mshale_fl.logging import get_logger

log = get_logger(__name__)

CONTENT_SECURITY_POLICY = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class ConsoleServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], state: ConsoleState) -> None:
        self.state = state
        self.loopback_only = is_loopback(address[0])
        super().__init__(address, ConsoleRequestHandler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        shown = f"[{host}]" if ":" in str(host) else str(host)
        return f"http://{shown}:{port}/"


class ConsoleRequestHandler(BaseHTTPRequestHandler):
    server: ConsoleServer
    server_version = "mshale-fl-console"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        log.debug("console.request", client=self.client_address[0], line=format % args)

    def _send(self, status: HTTPStatus, body: bytes, content_type: str, *, head: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _text(self, status: HTTPStatus, message: str, *, head: bool = False) -> None:
        self._send(status, (message + "\n").encode(), "text/plain; charset=utf-8", head=head)

    def _host_allowed(self) -> bool:
        if not self.server.loopback_only:
            return True
        host = self.headers.get("Host", "")
        name = urlsplit(f"//{host}").hostname or ""
        return is_loopback(name)

    def _get(self, *, head: bool) -> None:
        if not self._host_allowed():
            self._text(HTTPStatus.MISDIRECTED_REQUEST, "this console answers only requests to a loopback host", head=head)
            return
        path = urlsplit(self.path).path
        try:
            self._route(path, head=head)
        except Exception as error:  # every panel guards its source; this is a bug in the console itself
            log.exception("console.request_failed", path=path)
            self._text(HTTPStatus.INTERNAL_SERVER_ERROR, f"console error: {type(error).__name__}: {error}", head=head)

    def _route(self, path: str, *, head: bool) -> None:
        if path == "/":
            body = render_page(self.server.state.collect()).encode()
            self._send(HTTPStatus.OK, body, "text/html; charset=utf-8", head=head)
        elif path == "/api/state":
            body = json.dumps(self.server.state.collect(), indent=2, sort_keys=True).encode()
            self._send(HTTPStatus.OK, body, "application/json", head=head)
        else:
            self._text(HTTPStatus.NOT_FOUND, "not found: the console serves / and /api/state", head=head)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._get(head=False)

    def do_HEAD(self) -> None:  # noqa: N802
        self._get(head=True)

    def _read_only(self) -> None:
        self.send_response(HTTPStatus.METHOD_NOT_ALLOWED)
        self.send_header("Allow", "GET, HEAD")
        body = b"the console is read-only: GET and HEAD only\n"
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _read_only  # noqa: N815


__all__ = ["CONTENT_SECURITY_POLICY", "ConsoleServer", "is_loopback"]
