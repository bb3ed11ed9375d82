"""The jobtracker's status web site (twisted.web): pages and a JSON API.

``web_site(jt)`` is a ``Site`` with one leaf resource that routes the path
to what ``views.IJobTrackerStatus`` reads of the jobtracker (``views``
builds the data, ``pages`` the HTML). Handlers only read in-memory state,
except the logs of a job loaded from the history, which are read in a
thread: the reactor never blocks.
``StatusServer`` binds it for ``JobTrackerService``; beyond loopback it is
guarded by HTTP basic auth with a password derived from the cluster secret
(``python -m pytxmr web-password`` prints it). See docs/status-page.md.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from twisted.cred import checkers, credentials, error, portal
from twisted.internet import defer, endpoints
from twisted.logger import Logger
from twisted.web import guard, resource, server
from twisted.web.iweb import IRequest
from zope.interface import implementer

from . import pages
from .metrics import CONTENT_TYPE
from .wire import UnknownJob

if TYPE_CHECKING:
    from .tls import ClusterTLS
    from .views import IJobTrackerStatus

AUTH_REALM = b"pytxmr jobtracker"
_CSP = (b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        b"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
_STATIC = {
    "pytxmr.css": (b"text/css; charset=utf-8", pages.CSS.encode()),
    "pytxmr.js": (b"text/javascript; charset=utf-8", pages.JS.encode()),
}


def web_password(secret: bytes) -> str:
    """The status site's password: derived from the cluster secret, so that
    a password seen on the network does not give the secret (which lets
    its holder run code on every worker)."""
    return hmac.new(secret, b"pytxmr status page", hashlib.sha256).hexdigest()[:32]


def _unescape(text: str) -> str:
    out, it = [], iter(text)
    for c in it:
        out.append(next(it, "") if c == "\\" else c)
    return "".join(out)


def beyond_loopback(description: str) -> bool:
    """Whether a server endpoint string may accept connections from other
    hosts: anything but TCP on a loopback interface, or a UNIX socket."""
    fields, current, escaped = [], "", False
    for c in description:
        if escaped:
            current += "\\" + c
            escaped = False
        elif c == "\\":
            escaped = True
        elif c == ":":
            fields.append(current)
            current = ""
        else:
            current += c
    fields.append(current)
    kind = fields[0].strip().lower()
    if kind == "unix":
        return False
    if kind not in ("tcp", "tcp6", "ssl"):
        return True
    interface = ""
    for f in fields[1:]:
        key, sep, value = f.partition("=")
        if sep and key == "interface":
            interface = _unescape(value)
    if interface == "localhost":
        return False
    try:
        return not ipaddress.ip_address(interface).is_loopback
    except ValueError:
        return True


class StatusResource(resource.Resource):
    """Every path of the site; one leaf that routes by path segments."""

    isLeaf = True
    log = Logger()

    def __init__(self, jt: IJobTrackerStatus, logs: bool = True) -> None:
        super().__init__()
        self.jt = jt
        #: Whether task logs are shown: not on a cluster with users, where a
        #: job's logs are its owner's (``pytxmr logs`` checks who asks).
        self.logs = logs

    def render_GET(self, request: IRequest) -> bytes | int:
        for name, value in ((b"Content-Security-Policy", _CSP),
                            (b"X-Content-Type-Options", b"nosniff"),
                            (b"Referrer-Policy", b"no-referrer"),
                            (b"Cache-Control", b"no-store")):
            request.setHeader(name, value)
        raw = request.prepath + request.postpath
        try:
            parts = [p.decode("utf-8") for p in raw]
        except UnicodeDecodeError:  # under /api/, answered as the API answers
            return self._not_found(request, raw[:1] == [b"api"], "bad path: not UTF-8")
        while parts and parts[-1] == "":
            parts.pop()
        is_api = bool(parts) and parts[0] == "api"
        try:
            return self._route(request, parts[1:] if is_api else parts, is_api)
        except UnknownJob as e:
            return self._not_found(request, is_api, str(e))

    def render_HEAD(self, request: IRequest) -> bytes | int:
        return self.render_GET(request)

    def _route(self, request: IRequest, p: list[str], api: bool) -> bytes | int:
        jt = self.jt
        now = jt.now()
        if api:
            if p == ["workers"]:
                return self._json(request, jt.workers_view())
            if p == ["jobs"]:
                return self._json(request, jt.jobs_view())
            if len(p) == 2 and p[0] == "jobs":
                return self._later(request, jt.job_json(p[1]),
                                   lambda body: self._json(request, body), True)
            if len(p) == 5 and p[0] == "jobs" and p[2] == "attempts" and p[4] == "log":
                job_id, aid = p[1], p[3]
                if not self.logs:
                    return self._owners_only(request, True)
                return self._later(request, jt.attempt_log(job_id, aid), lambda text: (
                    self._json(request, {"job_id": job_id, "attempt": aid, "log": text})), True)
            return self._not_found(request, True, "no such API path")
        if not p:
            return self._html(request, pages.cluster_page(jt.workers_view(), jt.jobs_view(), now))
        if p == ["metrics"]:
            request.setHeader(b"Content-Type", CONTENT_TYPE.encode())
            return jt.metrics_text()
        if len(p) == 2 and p[0] == "jobs":
            return self._later(request, jt.job_page_view(p[1]), lambda view: (
                self._html(request, pages.job_page(self._links(view), now))), False)
        if len(p) == 5 and p[0] == "jobs" and p[2] == "attempts" and p[4] == "log":
            job_id, aid = p[1], p[3]
            if not self.logs:
                return self._owners_only(request, False)
            return self._later(request, jt.attempt_log(job_id, aid), lambda text: (
                self._html(request, pages.log_page(job_id, aid, text))), False)
        if len(p) == 2 and p[0] == "static" and p[1] in _STATIC:
            kind, body = _STATIC[p[1]]
            request.setHeader(b"Content-Type", kind)
            request.setHeader(b"Cache-Control", b"max-age=300")
            return body
        if p == ["favicon.ico"]:
            request.setResponseCode(204)  # browsers ask; nothing to show
            return b""
        return self._not_found(request, False, "no such page")

    def _json(self, request: IRequest, data: Any) -> bytes:
        """``data`` as JSON (or already JSON: bytes)."""
        request.setHeader(b"Content-Type", b"application/json; charset=utf-8")
        return data if isinstance(data, bytes) else json.dumps(data, indent=1).encode()

    def _html(self, request: IRequest, text: str) -> bytes:
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        return text.encode("utf-8")

    def _links(self, view: dict[str, Any]) -> dict[str, Any]:
        """A job page's view, without links to task logs it would refuse."""
        if self.logs:
            return view
        return {**view, "attempts": [{**a, "has_log": False} for a in view["attempts"]]}

    def _not_found(self, request: IRequest, api: bool, why: str) -> bytes:
        return self._error(request, api, 404, "Not found", why)

    def _owners_only(self, request: IRequest, api: bool) -> bytes:
        return self._error(request, api, 403, "Forbidden", (
            "on a cluster with users, a job's task logs are its owner's: read them with "
            "`python -m pytxmr logs JOB` as its owner or an administrator"))

    def _error(self, request: IRequest, api: bool, code: int, title: str, why: str) -> bytes:
        request.setResponseCode(code)
        if api:
            return self._json(request, {"error": why})
        return self._html(request, pages.error_page(title, why))

    def _later(self, request: IRequest, work: Awaitable[Any],
               render: Callable[[Any], bytes], api: bool) -> int:
        """Answer when ``work`` is done, without holding the reactor."""
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda f: gone.append(True))

        async def respond() -> None:
            try:
                body = render(await work)
            except UnknownJob as e:
                body = self._not_found(request, api, str(e))
            except Exception:
                self.log.failure("Status page request failed")
                request.setResponseCode(500)
                body = b"internal error\n"
            if not gone:
                request.write(body)
                request.finish()

        defer.Deferred.fromCoroutine(respond())
        return server.NOT_DONE_YET


@implementer(checkers.ICredentialsChecker)
class WebPasswordChecker:
    """Any user name, the password ``web_password(secret)``."""

    credentialInterfaces = (credentials.IUsernamePassword,)

    def __init__(self, password: str) -> None:
        self._password = password.encode()

    def requestAvatarId(self, creds: Any) -> defer.Deferred[bytes]:
        if hmac.compare_digest(creds.password, self._password):
            return defer.succeed(creds.username)
        return defer.fail(error.UnauthorizedLogin("wrong password"))


@implementer(portal.IRealm)
class _StatusRealm:
    def __init__(self, root: resource.Resource) -> None:
        self.root = root

    def requestAvatar(self, avatar_id: Any, mind: Any, *interfaces: Any) -> tuple[Any, Any, Any]:
        if resource.IResource not in interfaces:
            raise NotImplementedError("only web resources")
        return resource.IResource, self.root, lambda: None


class _Site(server.Site):
    def log(self, request: Any) -> None:
        """No access log: live pages poll every second and would flood the
        daemon's log."""


def web_site(jt: IJobTrackerStatus, password: str | None = None,
             logs: bool = True) -> server.Site:
    """The status site of ``jt``; with ``password``, behind HTTP basic auth;
    without ``logs``, its task logs refused."""
    root: resource.Resource = StatusResource(jt, logs)
    if password is not None:
        root = guard.HTTPAuthSessionWrapper(
            portal.Portal(_StatusRealm(root), [WebPasswordChecker(password)]),
            [guard.BasicCredentialFactory(AUTH_REALM)])
    site = _Site(root)
    site.noisy = False
    site.displayTracebacks = False
    return site


class StatusServer:
    """The status site bound to an endpoint, for ``JobTrackerService``."""

    log = Logger()

    def __init__(self, reactor: Any, jt: IJobTrackerStatus, listen: str, secret: bytes,
                 auth: bool = False, tls: ClusterTLS | None = None, logs: bool = True) -> None:
        self._reactor = reactor
        self._logs = logs
        self._tls = tls
        self.jt = jt
        self.listen = listen
        self.auth = auth or beyond_loopback(listen)
        self._secret = secret
        self._port: Any = None
        self.port: int | None = None

    async def start(self) -> int | None:
        """Listen; the bound port, or None when it cannot bind (the
        jobtracker runs on without its status page)."""
        site = web_site(self.jt, web_password(self._secret) if self.auth else None, self._logs)
        try:
            endpoint = endpoints.serverFromString(self._reactor, self.listen)
            factory: Any = site
            if self._tls is not None:  # browsers check our certificate; we ask for none
                factory = self._tls.wrap_server(site, self._reactor, require_peer=False)
            self._port = await endpoint.listen(factory)
        except Exception as e:
            self.log.error("No status page: cannot listen on {listen}: {e}", listen=self.listen,
                           e=e)
            return None
        host = self._port.getHost()
        self.port = getattr(host, "port", None)
        scheme = "https" if self._tls is not None else "http"
        where = (f"{scheme}://{host.host}:{self.port}/" if self.port is not None
                 else f"{self.listen}")
        self.log.info("Status page on {where}{auth}", where=where,
                      auth=" (basic auth: any user, password from "
                           "'python -m pytxmr web-password')" if self.auth else "")
        return self.port

    async def stop(self) -> None:
        if self._port is not None:
            await self._port.stopListening()
            self._port = None
