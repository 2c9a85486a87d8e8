"""The manager's debug endpoint: its records and state, read-only, for ``explain --from`` and
``tui --from``.

Owns the routes under ``/debug/ctrltrace/`` and who may call them. Routes:

- ``explain?namespace=&name=&kind=&controller=&limit=``: exactly ``explain --json``'s JSON
  (``explain_from`` over the same evidence);
- ``state``: controllers (workers, queue, in-flight requests and their age), watches (synced,
  last error) and the lease, from the manager's public attributes;
- ``records?since=CURSOR&limit=N``: newline-delimited JSON, one ``{"cursor", "record"}`` per
  line, resumable from the last cursor seen (the live view's tail);
- ``evidence/{about,watches,leases,controllers,reconciles,window}``: the record lists explain is
  given (``{"records": [...]}``), so a client runs the decision procedure itself
  (``ctrltrace.evidence.endpoint`` says why).

Evidence is whatever the manager's opener gives: the journal ``ctrltrace run`` writes (opened
read-only per request, in a worker thread: the loop never waits on the disk), or the recent
records it keeps in memory (``ctrltrace.ring``). Paths and records are as ``ctrltrace.debugwire``
names and writes them. Bad query parameters answer 400 with a one-line ``{"error": ...}``.

Access is controller-runtime's secured metrics (``filters.WithAuthenticationAndAuthorization``):
on a loopback address nobody needs credentials unless ``debug_auth="required"`` (only
processes in the pod's network namespace, ``kubectl port-forward`` among them, reach it);
anywhere else each request's bearer token is authenticated by the API server (TokenReview) and
authorized for the request's path with verb get (SubjectAccessReview for a non-resource URL),
through the manager's own transport (which records no API calls of its own;
``ctrltrace.debugauth`` makes the reviews). 401 without a valid token, 403 without the
permission, 503 when the review cannot be made (or the records cannot be read).

Whenever it asks for a token it serves HTTPS (controller-runtime's secure metrics do the same),
so that no token crosses a network in the clear: with ``tls.crt``/``tls.key`` from
``debug_cert_dir`` (cert-manager's Secret layout), else with a self-signed certificate made at
start (``ctrltrace.pki``) whose key is never stored in a file that outlives the load, so that
nothing is left on disk however the process ends (``_load_unstored``); its SHA-256 fingerprint
is logged either way. Files in ``debug_cert_dir`` are checked every ``CERT_CHECK_S`` and loaded
again when they change, and a self-signed pair is made anew a day before it expires (new
connections get the renewed certificate). On loopback without ``required`` it serves plain
HTTP: only the pod's own network namespace reaches it, and ``kubectl port-forward`` carries it
through the API server's own TLS tunnel.

It may not change anything in the manager, and sends no record anywhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import json
import math
import os
import ssl
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

import structlog
from aiohttp import web

from ctrltrace import pki
from ctrltrace.debugauth import TokenReviews
from ctrltrace.debugwire import CURSOR, ERROR, PREFIX, RECORD, RECORDS, Query, Route, record_json
from ctrltrace.evidence import Evidence, EvidenceError, Opener, explain_from
from ctrltrace.explain import TIMELINE_LIMIT, resolve_kind
from ctrltrace.journal import JournalError
from ctrltrace.records import Record

if TYPE_CHECKING:
    from ctrltrace.manager import Manager

AUTH_MODES = ("auto", "required")
RECORDS_LIMIT = 1_000  # records per /records answer unless asked for fewer
MAX_RECORDS_LIMIT = 10_000
CERT_FILE, KEY_FILE = "tls.crt", "tls.key"  # in debug_cert_dir: cert-manager's Secret keys
# A week bounds what a copied key is worth; a process that runs longer makes a new one a day
# before the old one expires (a pinned fingerprint then changes: the log says to what).
SELF_SIGNED_VALIDITY = datetime.timedelta(days=7)
SELF_SIGNED_RENEW_BEFORE = datetime.timedelta(days=1)
# How often debug_cert_dir's files are checked for a renewal (the kubelet updates a mounted
# Secret within a minute or so of cert-manager renewing it).
CERT_CHECK_S = 30.0

T = TypeVar("T")
N = TypeVar("N", int, float)
D = TypeVar("D")


class BadQuery(ValueError):
    """A query parameter is missing or malformed: answered with 400."""


def problems(address: str, auth: str, cert_dir: str | None = None, ring_size: int = 1) -> list[str]:
    """What is wrong with the debug endpoint's options, in start-up's words."""
    found = []
    if ring_size < 1:
        found.append(f"debug_ring_size must be at least 1, not {ring_size}")
    if cert_dir is not None:
        missing = [name for name in (CERT_FILE, KEY_FILE) if not (Path(cert_dir) / name).is_file()]
        if missing:
            found.append(f"debug_cert_dir {cert_dir!r} lacks {' and '.join(missing)}")
    if auth not in AUTH_MODES:
        found.append(f"debug_auth must be one of {', '.join(AUTH_MODES)}, not {auth!r}")
    if address not in ("0", ""):
        port = address.rpartition(":")[2]
        if not port.isdigit() or int(port) > 65535:
            found.append(f"debug_bind_address {address!r} is not HOST:PORT (or 0 to disable)")
    return found


def needs_auth(address: str, auth: str) -> bool:
    """Whether requests must bring a token: always with ``required``, else off loopback."""
    return auth == "required" or not is_loopback(address.rpartition(":")[0])


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # empty (every address) or a name other than localhost
        return False


# -- the server --------------------------------------------------------------------------------


class DebugServer:
    """Serves ``manager``'s evidence (from ``opener``, ``label`` saying what it is) and state
    on ``address``."""

    def __init__(
        self,
        manager: Manager,
        opener: Opener,
        *,
        label: str,
        address: str,
        auth: str,
        reviews: TokenReviews | None,
        cert_dir: str | None = None,
    ) -> None:
        self._manager = manager
        self._cert_dir = cert_dir
        self._cert_pem = b""  # the certificate served, once serving TLS
        self._renew_at = math.inf  # when the self-signed certificate is made anew (monotonic)
        self._opener = opener
        self._label = label
        self._address = address
        self._reviews = reviews if needs_auth(address, auth) else None
        if needs_auth(address, auth) and reviews is None:  # never serve unchecked instead
            raise ValueError(f"the debug endpoint on {address} needs TokenReviews to check tokens")
        self._runner: web.AppRunner | None = None
        self._reloading: asyncio.Task[None] | None = None
        self.port: int | None = None

    @property
    def authenticates(self) -> bool:
        return self._reviews is not None

    async def start(self) -> None:
        """Listen; a port that cannot be bound is said in the log and the manager runs on."""
        app = web.Application(middlewares=[self._access])
        app.router.add_get(f"{PREFIX}/{Route.EXPLAIN}", self._explain)
        app.router.add_get(f"{PREFIX}/{Route.STATE}", self._state)
        app.router.add_get(f"{PREFIX}/{Route.RECORDS}", self._records)
        app.router.add_get(f"{PREFIX}/{Route.EVIDENCE}/{{query}}", self._evidence)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        host, _, port = self._address.rpartition(":")
        log = structlog.get_logger("ctrltrace")
        try:
            tls = self._tls(host) if self.authenticates else None
            site = web.TCPSite(runner, host or "0.0.0.0", int(port), ssl_context=tls)  # noqa: S104
            await site.start()
        except (OSError, ValueError) as error:  # ssl.SSLError is an OSError
            await runner.cleanup()
            log.warning("Debug endpoint not served", address=self._address, error=str(error))
            return
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        log.info(
            "Serving debug endpoint",
            address=f"{'https' if tls else 'http'}://{host or '0.0.0.0'}:{self.port}",  # noqa: S104
            path=f"{PREFIX}/",
            access="bearer token: TokenReview + SubjectAccessReview"
            if self.authenticates
            else "no credentials (loopback)",
            evidence=self._label,
            **({} if tls is None else self._certificate_fields()),
        )
        if tls is not None:
            self._reloading = asyncio.create_task(self._keep_current(tls, host))

    async def _keep_current(self, tls: ssl.SSLContext, host: str) -> None:
        """Every ``CERT_CHECK_S``, serve a newer certificate from ``tls``: ``debug_cert_dir``'s
        once its files change (a renewed Secret), else a self-signed pair made anew a day
        before the old one expires. A pair that does not load (one caught half-written) is
        never served and is tried again at the next check."""
        files = None if self._cert_dir is None else _cert_files(self._cert_dir)
        log = structlog.get_logger("ctrltrace")
        loaded = None if files is None else await asyncio.to_thread(_stamp, files)
        clock = self._manager.clock
        while True:
            await clock.sleep(CERT_CHECK_S)
            if files is None:
                if clock.monotonic() < self._renew_at:
                    continue
                stamp = None
            else:
                stamp = await asyncio.to_thread(_stamp, files)
                if stamp == loaded:
                    continue
            try:
                pair = await asyncio.to_thread(self._checked_pair, host)
            except (OSError, ValueError) as error:  # ssl.SSLError is an OSError
                log.warning("Debug endpoint certificate not reloaded", error=str(error))
                continue
            self._serve(tls, pair)
            loaded = stamp
            log.info("Debug endpoint certificate reloaded", **self._certificate_fields())

    def _tls(self, host: str) -> ssl.SSLContext:
        """The server's TLS: the certificate in ``cert_dir``, else a self-signed one for
        ``host``, ``localhost`` and the loopback addresses."""
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._serve(tls, self._checked_pair(host))
        return tls

    def _checked_pair(self, host: str) -> pki.KeyPair:
        """The pair to serve next, loaded once into a context of its own: a live context that
        fails to load a certificate keeps it without its key and fails every handshake."""
        if self._cert_dir is None:
            pair = pki.self_signed(
                "ctrltrace-debug",
                [name for name in (host,) if name not in ("", "0.0.0.0", "::")]  # noqa: S104
                + ["localhost", "127.0.0.1", "::1"],
                SELF_SIGNED_VALIDITY,
            )
        else:
            cert_file, key_file = _cert_files(self._cert_dir)
            pair = pki.KeyPair(cert_file.read_bytes(), key_file.read_bytes())
        _load_unstored(ssl.create_default_context(ssl.Purpose.CLIENT_AUTH), pair)
        return pair

    def _serve(self, tls: ssl.SSLContext, pair: pki.KeyPair) -> None:
        """Serve ``pair`` from ``tls``. In the loop's thread, where handshakes run: loaded from
        another, a handshake could meet the new certificate beside the old key, and fail."""
        _load_unstored(tls, pair)
        self._cert_pem = pair.cert_pem
        if self._cert_dir is None:
            lifetime = SELF_SIGNED_VALIDITY - SELF_SIGNED_RENEW_BEFORE
            self._renew_at = self._manager.clock.monotonic() + lifetime.total_seconds()

    def _certificate_fields(self) -> dict[str, str]:
        return {
            "certificate": "self-signed"
            if self._cert_dir is None
            else str(Path(self._cert_dir) / CERT_FILE),
            "sha256_fingerprint": pki.fingerprint(self._cert_pem),
        }

    async def stop(self) -> None:
        if self._reloading is not None:
            self._reloading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reloading
            self._reloading = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _access(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if self._reviews is not None:
            authorization = request.headers.get("Authorization", "")
            if refusal := await self._reviews.check(authorization, request.path):
                headers = {"WWW-Authenticate": "Bearer"} if refusal.status == 401 else None
                return _error(refusal.status, refusal.message, headers)
        try:
            return await handler(request)
        except BadQuery as error:
            return _error(400, str(error))
        except (JournalError, EvidenceError) as error:  # locked, damaged, removed meanwhile
            return _error(503, f"cannot read the manager's records: {error}")

    async def _read(self, query: Callable[[Evidence], T]) -> T:
        """``query`` on freshly opened evidence, in a worker thread."""

        def run() -> T:
            with self._opener() as evidence:
                return query(evidence)

        return await asyncio.to_thread(run)

    async def _explain(self, request: web.Request) -> web.Response:
        params = request.query
        name = _text(params, "name", required=True)
        namespace = _text(params, "namespace")
        kind = _text(params, "kind") or None
        controller = _text(params, "controller") or None
        limit = _number(params, "limit", int, TIMELINE_LIMIT)
        now = self._manager.clock.wall()

        def answer(evidence: Evidence) -> dict[str, Any]:
            return explain_from(
                evidence,
                namespace=namespace,
                name=name,
                kind=resolve_kind(kind, evidence.watch_records()) if kind else None,
                controller=controller,
                now=now,
                timeline_limit=limit,
            ).to_json()

        return web.json_response(await self._read(answer))

    async def _evidence(self, request: web.Request) -> web.Response:
        params, query = request.query, request.match_info["query"]
        since = _number(params, "since", float, None)
        queries: dict[str, Callable[[Evidence], list[Record]]] = {
            Query.ABOUT: lambda evidence: evidence.about(
                _text(params, "namespace"),
                _text(params, "name", required=True),
                kind=_text(params, "kind") or None,
                since=since,
            ),
            Query.WATCHES: lambda evidence: evidence.watch_records(
                _text(params, "kind") or None, since
            ),
            Query.LEASES: lambda evidence: evidence.lease_records(since),
            Query.CONTROLLERS: lambda evidence: evidence.controller_records(since),
            Query.RECONCILES: lambda evidence: evidence.reconciles(since),
            Query.WINDOW: lambda evidence: evidence.window(
                _number(params, "t0", float, 0.0),
                _number(params, "t1", float, self._manager.clock.wall()),
            ),
        }
        if query not in queries:
            raise BadQuery(f"no evidence query {query!r}; one of {', '.join(queries)}")
        records = await self._read(queries[query])
        return web.json_response({RECORDS: [record_json(record) for record in records]})

    async def _records(self, request: web.Request) -> web.Response:
        after = _number(request.query, "since", int, 0)
        limit = _number(request.query, "limit", int, RECORDS_LIMIT)
        if not 0 < limit <= MAX_RECORDS_LIMIT:
            raise BadQuery(f"limit must be between 1 and {MAX_RECORDS_LIMIT}, not {limit}")
        tail = await self._read(lambda evidence: evidence.tail(after, limit))
        lines = (json.dumps({CURSOR: c, RECORD: record_json(r)}) + "\n" for c, r in tail)
        return web.Response(body="".join(lines).encode(), content_type="application/x-ndjson")

    async def _state(self, _: web.Request) -> web.Response:
        return web.json_response(state(self._manager))


def _cert_files(directory: str) -> tuple[Path, Path]:
    return Path(directory) / CERT_FILE, Path(directory) / KEY_FILE


def _load_unstored(tls: ssl.SSLContext, pair: pki.KeyPair) -> None:
    """Load ``pair`` into ``tls`` without leaving its key in a file. ``ssl`` reads a key from
    a path only: on Linux the path names a file in memory (``memfd_create``), gone with its
    last descriptor, so that however the process ends, even by SIGKILL, no key is left behind;
    elsewhere it is a temporary file (0600) deleted as soon as it is read."""
    in_memory = hasattr(os, "memfd_create")
    file: IO[bytes] = (
        open(os.memfd_create("ctrltrace-debug-tls", os.MFD_CLOEXEC), "wb")  # noqa: PTH123, SIM115
        if in_memory
        else tempfile.NamedTemporaryFile(prefix="ctrltrace-debug-tls-")  # noqa: SIM115
    )
    with file:
        file.write(pair.cert_pem + pair.key_pem)
        file.flush()
        tls.load_cert_chain(f"/proc/self/fd/{file.fileno()}" if in_memory else file.name)


def _stamp(files: tuple[Path, ...]) -> tuple[tuple[int, int, int], ...] | None:
    """What tells a file's new version from the old (a mounted Secret's files are replaced,
    not rewritten); None while one is missing."""
    try:
        return tuple((info.st_ino, info.st_mtime_ns, info.st_size) for info in map(os.stat, files))
    except OSError:
        return None


def state(manager: Manager) -> dict[str, Any]:
    """What the manager is doing now: its controllers, watches and lease."""
    now = manager.clock.monotonic()
    elector = manager.elector
    return {
        "manager": manager.name,
        "controllers": [
            {
                "name": controller.name,
                "started": controller.started,
                "workers": controller.options.max_concurrent_reconciles,
                "active_workers": controller.stats.active_workers,
                "queue": {
                    "ready": len(controller.queue),
                    "delayed": controller.queue.delayed_count,
                    "processing": controller.queue.processing_count,
                },
                "in_flight": [
                    {"request": request.key, "age_s": round(now - started, 3)}
                    for request, started in controller.stats.in_flight.items()
                ],
                "waiting_for": controller.unsynced() if not controller.started else [],
            }
            for controller in manager.controllers
        ],
        "watches": [
            {
                "kind": str(informer.kind),
                "synced": informer.synced.is_set(),
                "error": informer.last_error,
                "namespaces": [namespace for namespace in informer.namespaces if namespace],
                "label_selector": informer.label_selector,
            }
            for informer in manager.informers.values()
        ],
        "lease": None
        if elector is None
        else {
            "namespace": elector.namespace,
            "name": elector.name,
            "identity": elector.identity,
            "leader": elector.is_leader.is_set(),
            "holder": elector.holder,
        },
    }


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response({ERROR: message}, status=status, headers=headers)


def _text(params: Mapping[str, str], name: str, *, required: bool = False) -> str:
    value = params.get(name, "")
    if required and not value:
        raise BadQuery(f"the query parameter {name} is required")
    return value


def _number(params: Mapping[str, str], name: str, parse: Callable[[str], N], default: D) -> N | D:
    if name not in params:
        return default
    try:
        value = parse(params[name])
    except ValueError:
        raise BadQuery(f"{name}={params[name]!r} is not a number") from None
    if value < 0:
        raise BadQuery(f"{name} must not be negative, not {value}")
    return value
