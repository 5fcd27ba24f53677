"""HTTPS transport: PVE's envelope, status lines, auth order and the /_lab admin API.

Keep-alive HTTP/1.1 over TLS with a thread per connection; the TLS handshake
happens in that thread so a slow client cannot stall accept().
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import re
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from . import schema
from .apierror import ApiError, auth_error, fail, not_implemented, param_error
from .app import Emulator
from .auth import Identity
from .permissions import declared
from .router import RawJson, Reply, Request
from .schema import P
from .tls import ensure_certificate

log = logging.getLogger(__name__)

API_PREFIX = "/api2/json"
ADMIN_PREFIX = "/_lab"
_VMID_IN_PATH = re.compile(r"/qemu/(\d+)(?:/|$)")


class EmulatorServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, emulator: Emulator, host: str, port: int) -> None:
        self.emulator = emulator
        cert, key, fingerprint = ensure_certificate(emulator.settings.tls_dir, emulator.node)
        emulator.fingerprint = fingerprint
        self.ssl_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ssl_context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.ssl_context.load_cert_chain(cert, key)
        super().__init__((host, port), Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        try:
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            tls = self.ssl_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as err:
            log.debug("TLS handshake with %s failed: %s", client_address, err)
            return
        try:
            Handler(tls, client_address, self)
        finally:
            with contextlib.suppress(OSError):
                tls.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection error from %s", client_address, exc_info=True)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"https://{host!s}:{port}{API_PREFIX}"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "pve-api-daemon/3.0"
    sys_version = ""
    server: EmulatorServer

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.client_address[0], *args)

    # one entry point for every method
    def do_GET(self) -> None:
        self._serve()

    do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = do_GET

    def _serve(self) -> None:
        started = time.perf_counter()
        emu = self.server.emulator
        method = self.command
        split = urlsplit(self.path)
        path = unquote(split.path)
        status = 200
        try:
            body = self._read_body()
            if path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/"):
                data = self._admin(emu, method, path[len(ADMIN_PREFIX) :], split.query, body)
                self._send(200, "OK", {"data": data})
                return
            if not path.startswith(API_PREFIX + "/") and path != API_PREFIX:
                raise not_implemented(method, path)
            rel = path[len(API_PREFIX) :] or "/"
            params = self._params(method, split.query, body)
            reply = self._dispatch(emu, method, rel, params)
            if isinstance(reply, RawJson):
                self._send(200, "OK", None, raw=_raw_envelope(reply.data))
                return
            envelope: dict[str, Any] = {"data": reply}
            if isinstance(reply, Reply):
                envelope = {"data": reply.data, **reply.extra}
            self._send(200, "OK", envelope)
        except ApiError as err:
            status = err.status
            if err.delay and emu.settings.auth_failure_delay > 0:
                time.sleep(emu.settings.auth_failure_delay)
            if err.empty_body:
                self._send(err.status, err.reason, None)
            else:
                payload: dict[str, Any] = {"data": None}
                if err.errors:
                    payload["errors"] = err.errors
                if err.status != 401:
                    payload["message"] = err.message
                self._send(err.status, err.reason, payload)
        except Exception as err:  # a bug in the emulator: answer like PVE, keep the trace
            status = 500
            log.exception("internal error on %s %s", method, path)
            message = f"{err}".split("\n", 1)[0] or type(err).__name__
            self._send(500, message, {"data": None, "message": message + "\n"})
        finally:
            log.info("%s %s -> %s (%.1f ms)", method, path, status, (time.perf_counter() - started) * 1e3)

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _params(self, method: str, query: str, body: bytes) -> dict[str, str]:
        if body and method in ("GET", "DELETE", "HEAD"):
            raise ApiError(501, f"Unexpected content for method '{method}'\n")
        params: dict[str, str] = {}
        if body:
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if ctype == "application/json":
                try:
                    decoded = json.loads(body)
                except json.JSONDecodeError as err:
                    raise fail(f"unable to parse JSON body: {err}", 400) from err
                if not isinstance(decoded, dict):
                    raise fail("JSON body must be an object", 400)
                params.update({k: _json_param(v) for k, v in decoded.items() if v is not None})
            else:
                params.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        params.update(parse_qsl(query, keep_blank_values=True))  # the query wins, as in PVE
        return params

    def _dispatch(self, emu: Emulator, method: str, rel: str, params: dict[str, str]) -> Any:
        if rel.rstrip("/") == "/access/ticket":
            if method == "POST":
                return self._login(emu, params)
            if method == "GET":
                return None
        identity = emu.auth.authenticate(
            method,
            self.headers.get("Cookie"),
            self.headers.get("Authorization"),
            self.headers.get("CSRFPreventionToken"),
        )
        self._request_faults(emu, identity, method, rel, params)
        resolved = emu.router.resolve(method, rel)
        if resolved is None:
            raise not_implemented(method, rel)
        handler, path_params, pattern = resolved
        emu.begin_request()
        if "node" in path_params:  # pveproxy forwards to that node: a failed one does not answer
            emu.check_reachable(unquote(path_params["node"]))
        if method != "GET":
            emu.check_quorum()
        for key, value in path_params.items():
            if key in params:  # PVE's HTTP server refuses any parameter the URI already sets
                raise param_error({key: "duplicate parameter (already defined in URI)"})
            params[key] = unquote(value)
        # as PVE's HTTP server: the endpoint's permissions before its parameters are verified
        emu.access.check_api(declared(method, pattern, emu.release), identity.authuser, params)
        return handler(Request(method, rel, params, identity, path_params))

    def _request_faults(
        self, emu: Emulator, identity: Identity, method: str, rel: str, params: dict[str, str]
    ) -> None:
        match = _VMID_IN_PATH.search(rel)
        vmid_text = match.group(1) if match else params.get("vmid")
        vmid = int(vmid_text) if vmid_text and vmid_text.isdigit() else None
        kinds = {"http_500", "lock_timeout"}
        if identity.via == "ticket":
            kinds.add("ticket_expired")
        rule = emu.faults.match_request(kinds, method, rel, vmid)
        if rule is None:
            return
        if rule.kind == "ticket_expired":
            raise auth_error("Authentication failed!")
        if rule.kind == "lock_timeout":
            raise fail(
                rule.message or f"can't lock file '/var/lock/qemu-server/lock-{vmid}.conf' - got timeout"
            )
        raise fail(rule.message or "internal error (lab fault)")

    def _login(self, emu: Emulator, params: dict[str, str]) -> Any:
        spec = {
            "username": P(optional=False, max_length=64),
            "password": P(optional=False),
            "realm": P(),
            "otp": P(),
            "path": P(),
            "privs": P(),
            "new-format": P("boolean"),
            "tfa-challenge": P(),
        }
        checked = schema.check(params, spec)
        userid = emu.auth.login(checked["username"], checked["password"], checked.get("realm"))
        if userid is None:
            raise ApiError(401, "authentication failure\n", delay=True)
        ticket, csrf = emu.auth.issue(userid)
        return {
            "username": userid,
            "ticket": ticket,
            "CSRFPreventionToken": csrf,
            "cap": {
                "vms": {"VM.Audit": 1, "VM.PowerMgmt": 1, "VM.Config.Disk": 1, "VM.Allocate": 1},
                "storage": {"Datastore.Audit": 1, "Datastore.AllocateSpace": 1},
                "nodes": {"Sys.Audit": 1},
                "access": {},
                "dc": {},
                "sdn": {},
            },
        }

    # --- admin API ------------------------------------------------------------------------

    def _admin(self, emu: Emulator, method: str, rel: str, query: str, body: bytes) -> Any:
        identity = emu.auth.authenticate(method, None, self.headers.get("Authorization"), None)
        if identity.via != "token" or identity.userid != "root@pam":
            raise ApiError(403, "Permission check failed (/_lab, root@pam token required)\n")
        spec: dict[str, Any] = {}
        if body:
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if ctype == "application/json":
                spec = json.loads(body)
            else:
                spec = dict(parse_qsl(body.decode(), keep_blank_values=True))
        rel = rel.rstrip("/") or "/"
        if rel == "/faults":
            if method == "GET":
                return emu.faults.describe()
            if method == "POST":
                try:
                    return emu.faults.add(spec).as_dict()
                except (ValueError, re.error) as err:
                    raise fail(str(err), 400) from err
            if method == "DELETE":
                emu.faults.clear()
                return None
        match = re.fullmatch(r"/faults/([^/]+)", rel)
        if match and method == "DELETE":
            if not emu.faults.remove(match.group(1)):
                raise fail(f"no such fault '{match.group(1)}'", 404)
            return None
        if rel == "/info" and method == "GET":
            return emu.info()
        if rel == "/reset" and method == "POST":
            return {"removed": emu.reset()}
        match = re.fullmatch(r"/nodes/([^/]+)/(fail|recover)", rel)
        if match and method == "POST":  # a node loses power or comes back (`lab node fail/recover`)
            if match.group(2) == "fail":
                return {"stopped": emu.fail_node(match.group(1))}
            emu.recover_node(match.group(1))
            return None
        raise not_implemented(method, ADMIN_PREFIX + rel)

    def _send(
        self, status: int, reason: str, payload: dict[str, Any] | None, raw: bytes | None = None
    ) -> None:
        body = raw if raw is not None else b"" if payload is None else json.dumps(payload).encode()
        reason = reason.replace("\r", " ").replace("\n", " ")
        encoding = ""
        # PVE gzips answers of 1 KiB and more when the client accepts it
        if len(body) >= 1024 and "gzip" in (self.headers.get("Accept-Encoding") or ""):
            body = _gzip(body)
            encoding = "Content-Encoding: gzip\r\n"
        head = (
            f"HTTP/1.1 {status} {reason}\r\n"
            f"Server: {self.server_version}\r\n"
            f"Date: {self.date_time_string()}\r\n"
            "Cache-Control: max-age=0\r\n"
            "Pragma: no-cache\r\n"
            "Expires: " + self.date_time_string() + "\r\n"
            "Content-Type: application/json;charset=UTF-8\r\n"
            f"Content-Length: {len(body)}\r\n"
            f"{encoding}"
            "\r\n"
        )
        self.wfile.write(head.encode("latin-1", "replace") + (b"" if self.command == "HEAD" else body))
        self.wfile.flush()
        if self.close_connection is None:
            self.close_connection = False


_last_raw: tuple[bytes, bytes] = (b"", b"")
_last_gzip: tuple[bytes, bytes] = (b"", b"")


def _raw_envelope(data: bytes) -> bytes:
    """Wrap cached JSON; the last envelope is kept so a cache hit stays a cache hit."""
    global _last_raw
    cached = _last_raw
    if cached[0] is data:
        return cached[1]
    body = b'{"data":' + data + b"}"
    _last_raw = (data, body)
    return body


def _gzip(body: bytes) -> bytes:
    global _last_gzip
    cached = _last_gzip
    if cached[0] is body:
        return cached[1]
    packed = gzip.compress(body, compresslevel=1, mtime=0)
    _last_gzip = (body, packed)
    return packed


def _json_param(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


class RunningEmulator:
    """An emulator serving in a background thread (tests, benchmarks, `lab up`)."""

    def __init__(self, emulator: Emulator, host: str = "127.0.0.1", port: int = 0) -> None:
        self.emulator = emulator
        self.server = EmulatorServer(emulator, host, port)
        self.thread = threading.Thread(target=self.server.serve_forever, name="emulator-http")
        self.thread.daemon = True

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def start(self) -> RunningEmulator:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
        self.emulator.close()
