"""The manager: one shared set of informers, the controllers, leader election, health probes.

Owns start-up order (validate → connect → informers → leadership → controllers), what a
non-leader runs (informers and probes, no reconciles), and shutdown (stop taking work, let
in-flight reconciles finish within the graceful timeout, release the lease if asked).

Over 500 lines because ``Manager`` is one object, as controller-runtime's manager is: start-up,
leadership, shutdown and the health and debug endpoints all read and change the same state
(the informers, the controllers and their tasks, the elector, the stop signal), and the
stages it wires each live in their own module already.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp
import structlog
from aiohttp import web

from ctrltrace import debugauth, debugserver, logs
from ctrltrace.builder import Builder, BuildError, ControllerSpec, _Registry
from ctrltrace.client import Client
from ctrltrace.clock import Clock, SystemClock
from ctrltrace.controller import CacheSyncTimeout, Controller, ControllerFailed, Watch
from ctrltrace.evidence import Opener
from ctrltrace.kinds import Kind, RestMapper
from ctrltrace.kubeevents import EventBroadcaster, EventRecorder
from ctrltrace.leaderelection import (
    LeaderElector,
    LeaderLost,
    LeaseTiming,
    default_identity,
    lease_namespace,
    validate_lease_name,
)
from ctrltrace.narrator import Narrator
from ctrltrace.records import Recorder, Sink, Stage
from ctrltrace.ring import DEFAULT_CAPACITY, RecordRing, RingEvidence
from ctrltrace.source import IndexFunc, Informer, Transform, WriteLog, drop_managed_fields
from ctrltrace.transport import Transport, load_configuration
from ctrltrace.vocabulary import (
    Attr,
    Attrs,
    ControllerOutcome,
    ManagerOutcome,
    controller_record,
    manager_record,
)


class Unreachable(ConnectionError):
    """The API server did not answer at start-up."""


class Runnable(Protocol):
    """Something the manager runs beside its informers from start to shutdown (cancelled
    then), whether or not this replica leads: a metrics endpoint, an exporter."""

    async def __call__(self) -> None: ...


@dataclass
class ManagerOptions:
    namespaces: Sequence[str] = ()  # namespaces to cache; empty = all
    label_selectors: Mapping[str, str] = field(default_factory=dict)  # "Kind[.group]" → selector
    leader_election: bool = False
    leader_election_id: str = ""
    leader_election_namespace: str = ""
    lease_timing: LeaseTiming = field(default_factory=LeaseTiming)
    leader_election_release_on_cancel: bool = False
    metrics_bind_address: str = "127.0.0.1:8080"  # "0" disables
    health_probe_bind_address: str = "127.0.0.1:8081"  # "0" disables
    # Loopback by default: kubectl port-forward reaches it, other pods do not ("0" disables).
    debug_bind_address: str = "127.0.0.1:8082"
    debug_auth: str = "auto"  # "required": a reviewed token even on loopback
    debug_cert_dir: str | None = None  # tls.crt/tls.key when it asks for tokens; else self-signed
    debug_ring_size: int = DEFAULT_CAPACITY  # records kept in memory without a journal
    graceful_shutdown_timeout: float = 30.0
    kubeconfig: str | None = None
    context: str | None = None
    metadata_only: Sequence[str] = ()  # "Kind[.group]": cache metadata, not bodies
    cache_transform: Transform | None = drop_managed_fields  # None keeps objects whole


class Manager:
    """Runs controllers the way controller-runtime's manager does.

    >>> mgr = Manager(name="widgets", leader_election_id="widgets.example.com")
    """

    def __init__(
        self,
        name: str = "ctrltrace",
        *,
        namespaces: Sequence[str] = (),
        label_selectors: Mapping[str, str] | None = None,
        leader_election: bool = False,
        leader_election_id: str = "",
        leader_election_namespace: str = "",
        lease_timing: LeaseTiming | None = None,
        leader_election_release_on_cancel: bool = False,
        metrics_bind_address: str = "127.0.0.1:8080",
        health_probe_bind_address: str = "127.0.0.1:8081",
        debug_bind_address: str = "127.0.0.1:8082",
        debug_auth: str = "auto",
        debug_cert_dir: str | None = None,
        debug_ring_size: int = DEFAULT_CAPACITY,
        graceful_shutdown_timeout: float = 30.0,
        kubeconfig: str | None = None,
        context: str | None = None,
        recorder: Recorder | None = None,
        clock: Clock | None = None,
        metadata_only: Sequence[str] = (),
        cache_transform: Transform | None = drop_managed_fields,
    ) -> None:
        self.name = name
        self.options = ManagerOptions(
            namespaces=tuple(namespaces),
            label_selectors=dict(label_selectors or {}),
            leader_election=leader_election,
            leader_election_id=leader_election_id,
            leader_election_namespace=leader_election_namespace,
            lease_timing=lease_timing or LeaseTiming(),
            leader_election_release_on_cancel=leader_election_release_on_cancel,
            metrics_bind_address=metrics_bind_address,
            health_probe_bind_address=health_probe_bind_address,
            debug_bind_address=debug_bind_address,
            debug_auth=debug_auth,
            debug_cert_dir=debug_cert_dir,
            debug_ring_size=debug_ring_size,
            graceful_shutdown_timeout=graceful_shutdown_timeout,
            kubeconfig=kubeconfig,
            context=context,
            metadata_only=tuple(metadata_only),
            cache_transform=cache_transform,
        )
        self.recorder = recorder or Recorder()
        self.clock: Clock = clock or SystemClock()
        # First of the sinks: the runtime says what happens to it before anything else runs.
        self.recorder.add(Narrator(self.clock))
        self._events = EventBroadcaster(recorder=self.recorder, clock=self.clock)
        self._registry = _Registry()
        self._runnables: list[Runnable] = []
        self._indexes: dict[Kind, dict[str, IndexFunc]] = {}
        self.informers: dict[Kind, Informer] = {}
        self.controllers: list[Controller] = []
        self.elector: LeaderElector | None = None
        self.health_port: int | None = None
        # Where the debug endpoint reads records, and what that is in words (``ctrltrace run``
        # gives its journal); None keeps the latest in memory while it serves (``ctrltrace.ring``).
        self.debug_evidence: tuple[Opener, str] | None = None
        self.debug_server: debugserver.DebugServer | None = None  # while serving
        self._ring: RecordRing | None = None
        self._stop_requested = False
        self._stop_reason = "stop requested"
        self.ran = False  # connected and started its informers at least once
        self._stop: asyncio.Event | None = None  # made in start(): events bind to a loop

    # -- building ----------------------------------------------------------------------------

    def controller(self) -> Builder:
        return Builder(self._registry)

    @property
    def controller_specs(self) -> tuple[ControllerSpec, ...]:
        """The controllers registered so far, as the builder described them (for tools that
        read a manager without running it: ``rbac``, ``doctor``)."""
        return tuple(self._registry.specs)

    def event_recorder(self, component: str) -> EventRecorder:
        """Emits Kubernetes Events from ``component`` (controller-runtime's
        ``GetEventRecorderFor``); sent while the manager runs. Each reconcile has its
        controller's as ``ctx.events``."""
        return self._events.recorder_for(component)

    def add_sink(self, sink: Sink) -> None:
        self.recorder.add(sink)

    def index_field(self, api_version: str, kind: str, name: str, func: IndexFunc) -> None:
        """Index the cache of ``kind`` as ``name`` (a field path, by convention): ``func`` gives
        each object's values, and ``client.list(..., matching_fields={name: value})`` finds
        them without a scan
        (controller-runtime's ``IndexField``). A kind no controller watches is cached for it."""
        indexes = self._indexes.setdefault(Kind(api_version, kind), {})
        if name in indexes:
            raise ValueError(f"{kind} already has an index named {name!r}")
        indexes[name] = func

    def add(self, runnable: Runnable) -> None:
        """Run ``runnable`` from start-up to shutdown (controller-runtime's ``mgr.Add``)."""
        self._runnables.append(runnable)

    def problems(self) -> list[str]:
        """Everything that would stop start-up, in the words start-up uses."""
        found = self._registry.problems()
        options = self.options
        if options.leader_election:
            if problem := validate_lease_name(options.leader_election_id):
                found.append(problem)
            found.extend(options.lease_timing.problems())
        found.extend(
            debugserver.problems(
                options.debug_bind_address,
                options.debug_auth,
                options.debug_cert_dir,
                options.debug_ring_size,
            )
        )
        return found

    # -- running -----------------------------------------------------------------------------

    def run(self) -> None:
        """Run until SIGINT or SIGTERM (blocking), as the process's main program.

        Owning the process, it sets up logging to stderr unless the program did (structlog),
        and sets aside everything start-up created (modules, classes,
        the user's own globals) from the garbage collector (``gc.freeze``): every full
        collection during the run would otherwise trace all of it again.
        """
        if not structlog.is_configured():  # as ``ctrltrace run`` does: console lines on stderr
            logs.configure()
        # A controller's full collections come with its growing caches; tracing the start-up
        # heap in each would otherwise trace all of it again.
        gc.freeze()

        async def main() -> None:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self.stop, f"received {sig.name}")
            await self.start()

        asyncio.run(main())

    def stop(self, reason: str = "stop requested") -> None:
        """Ask a running (or starting) manager to shut down gracefully."""
        if not self._stop_requested:
            self._stop_reason = reason
        self._stop_requested = True
        if self._stop is not None:
            self._stop.set()

    async def start(self, transport: Transport | None = None) -> None:
        """Run until ``stop()``; raises BuildError, LeaderLost, ControllerFailed (its subclass
        CacheSyncTimeout when a controller's caches did not sync in time), or a connection
        error."""
        if problems := self.problems():
            raise BuildError("; ".join(problems))
        self._stop = asyncio.Event()
        if self._stop_requested:
            self._stop.set()
        own_transport = transport is None
        if transport is None:
            configuration = await load_configuration(self.options.kubeconfig, self.options.context)
            transport = Transport(configuration)
        try:
            await self._preflight(transport)
            await self._run(transport)
        finally:
            if own_transport:
                await transport.close()

    async def _preflight(self, transport: Transport) -> None:
        """Fail fast when the API server cannot be reached at all (later losses are retried)."""
        try:
            await transport.request("GET", "/version")
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            detail = str(error) or type(error).__name__
            raise Unreachable(
                f"cannot reach the API server at {transport.host}: {detail}"
            ) from error

    async def _run(self, transport: Transport) -> None:
        self.ran = True
        debug_evidence = self._debug_evidence()  # first: an in-memory ring sees every record
        mapper = RestMapper(transport)
        writes = WriteLog()
        self._build(transport, mapper, writes)
        client = Client(
            transport,
            mapper,
            self.informers,
            recorder=self.recorder,
            clock=self.clock,
            writes=writes,
            field_manager=self.name,
        )
        self._emit(
            ManagerOutcome.STARTED,
            f"{len(self.controllers)} controller(s), {len(self.informers)} kind(s)",
        )
        background: list[asyncio.Task[None]] = [
            asyncio.create_task(informer.run(), name=f"informer {informer.kind}")
            for informer in self.informers.values()
        ] + [asyncio.create_task(runnable()) for runnable in self._runnables]
        background.append(asyncio.create_task(self._events.run(transport), name="Events"))
        health = await self._serve_health()
        debug = await self._serve_debug(transport, debug_evidence)
        workers: list[asyncio.Task[None]] = []
        lost: BaseException | None = None
        try:
            leadership = asyncio.create_task(self._lead(transport, client, workers))
            assert self._stop is not None
            stop = asyncio.create_task(self._stop.wait())
            done, _ = await asyncio.wait({leadership, stop}, return_when=asyncio.FIRST_COMPLETED)
            if leadership in done:
                lost = leadership.exception()
            else:
                leadership.cancel()
                with contextlib.suppress(asyncio.CancelledError, LeaderLost):
                    await leadership
            stop.cancel()
            self._emit(
                ManagerOutcome.STOPPING,
                str(lost) if lost else self._stop_reason,
                {Attr.IN_FLIGHT: sum(len(c.stats.in_flight) for c in self.controllers)},
            )
            await self._drain(workers)
        finally:
            for task in background + workers:
                task.cancel()
            await asyncio.gather(*background, *workers, return_exceptions=True)
            if health is not None:
                await health.cleanup()
            if debug is not None:
                await debug.stop()
            self._emit(ManagerOutcome.STOPPED, str(lost) if lost else "stopped")
        if lost is not None:
            raise lost

    def _build(self, transport: Transport, mapper: RestMapper, writes: WriteLog) -> None:
        self.informers.clear()
        self.controllers.clear()

        def informer(kind: Kind) -> Informer:
            if kind not in self.informers:
                self.informers[kind] = Informer(
                    transport,
                    mapper,
                    kind,
                    recorder=self.recorder,
                    clock=self.clock,
                    writes=writes,
                    namespaces=self.options.namespaces,
                    label_selector=self._selector(kind),
                    transform=self.options.cache_transform,
                    metadata_only=_names_kind(self.options.metadata_only, kind),
                )
            return self.informers[kind]

        for spec in self._registry.specs:
            assert spec.reconciler is not None  # validated in problems()
            controller = Controller(
                spec.name,
                spec.reconciler,
                recorder=self.recorder,
                clock=self.clock,
                options=spec.options,
                events=self._events.recorder_for(spec.name),
            )
            for watch in spec.watches:
                controller.watch(
                    Watch(
                        informer(watch.kind),
                        watch.handler(spec.for_kind, mapper),
                        watch.predicates + spec.global_predicates,
                        watch.role,
                    )
                )
            self.controllers.append(controller)
        for kind, indexes in self._indexes.items():
            for name, func in indexes.items():
                informer(kind).add_index(name, func)

    def _selector(self, kind: Kind) -> str:
        selectors = self.options.label_selectors
        return selectors.get(str(kind), selectors.get(kind.kind, ""))

    async def _lead(
        self, transport: Transport, client: Client, workers: list[asyncio.Task[None]]
    ) -> None:
        if self.options.leader_election:
            self.elector = LeaderElector(
                transport,
                name=self.options.leader_election_id,
                namespace=lease_namespace(self.options.leader_election_namespace),
                identity=default_identity(),
                recorder=self.recorder,
                clock=self.clock,
                timing=self.options.lease_timing,
                release_on_cancel=self.options.leader_election_release_on_cancel,
            )
            await self.elector.acquire()
        controllers = {
            asyncio.create_task(controller.run(client), name=f"controller {controller.name}"): (
                controller
            )
            for controller in self.controllers
        }
        workers.extend(controllers)
        holding = asyncio.create_task(self.elector.hold()) if self.elector is not None else None
        try:
            # Until the lease is lost or a controller ends: either stops the manager.
            done, _ = await asyncio.wait(
                [*controllers, *([holding] if holding else [])],
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            if holding is not None and not holding.done():
                holding.cancel()
                with contextlib.suppress(asyncio.CancelledError, LeaderLost):
                    await holding
        ended = done.pop()
        if ended is holding:
            ended.result()  # raises LeaderLost
        self._controller_ended(controllers[ended], ended)

    def _controller_ended(self, controller: Controller, task: asyncio.Task[None]) -> None:
        """A controller ended outside shutdown: say why, and stop the manager with it."""
        error = task.exception()
        if isinstance(error, CacheSyncTimeout):  # recorded and told by the controller
            raise error
        if isinstance(error, ControllerFailed):
            reason = error.reason
        elif error is not None:
            reason = f"{type(error).__name__}: {error}"
        else:
            reason = "its workers stopped"
        self.recorder.emit(
            controller_record(
                self.clock.wall(),
                Stage.CONTROLLER,
                ControllerOutcome.FAILED,
                reason,
                controller=controller.name,
            )
        )
        raise ControllerFailed(controller.name, reason) from error

    async def _drain(self, workers: list[asyncio.Task[None]]) -> None:
        """Stop taking work and give in-flight reconciles the graceful timeout to finish."""
        draining = []
        for controller, task in zip(self.controllers, workers, strict=False):
            controller.queue.shutdown()
            if controller.started:
                draining.append(task)
            else:  # still waiting for its caches: nothing in flight to wait for
                task.cancel()
        if draining:
            timeout = self.options.graceful_shutdown_timeout
            _, unfinished = await asyncio.wait(draining, timeout=timeout)
            in_flight = sum(len(c.stats.in_flight) for c in self.controllers)
            if unfinished:
                self._emit(
                    ManagerOutcome.DRAIN_TIMED_OUT,
                    f"reconciles still running after the graceful timeout of {timeout:g}s",
                    {Attr.IN_FLIGHT: in_flight},
                )
                return
        self._emit(ManagerOutcome.DRAINED, "no reconcile in flight", {Attr.IN_FLIGHT: 0})

    async def _serve_health(self) -> web.AppRunner | None:
        address = self.options.health_probe_bind_address
        if address in ("0", ""):
            return None
        host, _, port = address.rpartition(":")
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host or "0.0.0.0", int(port))  # noqa: S104
        await site.start()
        self.health_port = int(runner.addresses[0][1])
        return runner

    def _debug_evidence(self) -> tuple[Opener, str] | None:
        """What the debug endpoint will read, and its label, if it is on."""
        if self.options.debug_bind_address in ("0", ""):
            return None
        if self.debug_evidence is not None:
            return self.debug_evidence
        if self._ring is None:
            self._ring = RecordRing(self.options.debug_ring_size)
            self.recorder.add(self._ring)
        return self._ring.evidence, RingEvidence.label

    async def _serve_debug(
        self, transport: Transport, evidence: tuple[Opener, str] | None
    ) -> debugserver.DebugServer | None:
        if evidence is None:
            return None
        opener, label = evidence
        self.debug_server = debugserver.DebugServer(
            self,
            opener,
            label=label,
            address=self.options.debug_bind_address,
            auth=self.options.debug_auth,
            reviews=debugauth.TokenReviews(transport, self.clock),
            cert_dir=self.options.debug_cert_dir,
        )
        await self.debug_server.start()
        return self.debug_server

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _readyz(self, _: web.Request) -> web.Response:
        """Ready once every cache has synced. The body names each check, the API server's
        way (``[+]`` passing, ``[-]`` failing, with why); the lease is reported, not checked:
        a standby replica is ready to take over."""
        lines, ready = [], True
        for informer in self.informers.values():
            if informer.synced.is_set():
                lines.append(f"[+]cache {informer.kind} synced")
            else:
                ready = False
                lines.append(
                    f"[-]cache {informer.kind} not synced: {informer.last_error or 'no answer yet'}"
                )
        for controller in self.controllers:
            if not controller.started and (unsynced := controller.unsynced()):
                lines.append(f"[-]controller {controller.name} waiting for " + ", ".join(unsynced))
        if self.elector is not None:
            lines.append(f"[+]lease {self.elector.namespace}/{self.elector.name}: {self._role()}")
        lines.append("readyz check passed" if ready else "readyz check failed")
        return web.Response(status=200 if ready else 503, text="\n".join(lines) + "\n")

    def _role(self) -> str:
        assert self.elector is not None
        if self.elector.is_leader.is_set():
            return "leader"
        holder = self.elector.holder
        return f"standby, held by {holder}" if holder else "not acquired yet"

    def _emit(self, outcome: str, reason: str, attrs: Attrs | None = None) -> None:
        self.recorder.emit(manager_record(self.clock.wall(), outcome, reason, attrs))


def _names_kind(names: Sequence[str], kind: Kind) -> bool:
    return str(kind) in names or kind.kind in names
