"""Leader election on a ``coordination.k8s.io/v1`` Lease, as client-go's leaderelection does it.

Owns acquiring, renewing and releasing the lease, the timing rules (lease 15 s, renew
deadline 10 s, retry 2 s by default; expiry judged by when *we* last saw the lease change, so
clock skew between replicas does not matter), the id's validation, and a record for every
transition. The manager decides what leadership allows.
"""

from __future__ import annotations

import asyncio
import datetime
import random
import re
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path

from ctrltrace.clock import Clock
from ctrltrace.records import Recorder
from ctrltrace.transport import ApiError, Json, NotFound, Transport
from ctrltrace.vocabulary import LeaseOutcome, lease_record

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_RENEWED = "renewed"  # on time: not recorded (a lease renews every retry period)


# A pod's own namespace, from its service account: where controller-runtime puts the Lease when
# no namespace is given.
POD_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def pod_namespace() -> str:
    """The namespace of the pod this process runs in; "" outside a cluster."""
    try:
        return POD_NAMESPACE_FILE.read_text().strip()
    except OSError:
        return ""


def lease_namespace(configured: str) -> str:
    """Where the Lease lives: the namespace asked for, else the pod's own (as controller-runtime
    does in a cluster), else "default" (where controller-runtime would refuse to start, and
    ``ctrltrace doctor`` fails the set-up)."""
    return configured or pod_namespace() or "default"


def validate_lease_name(name: str) -> str | None:
    """Why ``name`` cannot name a Lease (a DNS subdomain), or None when it can."""
    if not name:
        return "the leader election id is empty"
    if len(name) > 253:
        return f"the leader election id {name!r} is longer than 253 characters"
    if not _DNS_SUBDOMAIN.match(name):
        return (
            f"the leader election id {name!r} is not a valid DNS subdomain (lower-case letters, "
            "digits, '-' and '.', starting and ending with a letter or digit)"
        )
    return None


@dataclass(frozen=True)
class LeaseTiming:
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def problems(self) -> list[str]:
        found = []
        if self.lease_duration <= self.renew_deadline:
            found.append("lease duration must be greater than the renew deadline")
        if self.renew_deadline <= self.retry_period * 1.2:
            found.append("renew deadline must be greater than 1.2 x the retry period")
        return found


class LeaderLost(Exception):
    """This replica could not renew the lease in time; the manager must stop."""


def default_identity() -> str:
    return f"{socket.gethostname()}_{uuid.uuid4()}"


def _micro_time(seconds: float) -> str:
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(
        self,
        transport: Transport,
        *,
        name: str,
        namespace: str,
        identity: str,
        recorder: Recorder,
        clock: Clock,
        timing: LeaseTiming = LeaseTiming(),
        release_on_cancel: bool = False,
    ) -> None:
        self.name = name
        self.namespace = namespace
        self.identity = identity
        self.timing = timing
        self._transport = transport
        self._recorder = recorder
        self._clock = clock
        self._release_on_cancel = release_on_cancel
        self._path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}"
        self._observed: Json | None = None
        self._observed_at = 0.0  # monotonic time we last saw the lease record change
        self.is_leader = asyncio.Event()
        self.holder = ""
        self._last_outcome = ""

    async def acquire(self) -> None:
        """Return once this replica holds the lease."""
        self._emit(
            LeaseOutcome.ATTEMPTING,
            f"{self.identity} tries to acquire {self.namespace}/{self.name}",
        )
        while not await self._try_acquire_or_renew():
            await self._clock.sleep(self.timing.retry_period * random.uniform(1.0, 1.2))  # noqa: S311
        self.is_leader.set()

    async def hold(self) -> None:
        """Renew until the lease cannot be renewed within the renew deadline (LeaderLost)."""
        try:
            while True:
                began = self._clock.monotonic()
                deadline = began + self.timing.renew_deadline
                attempts = 1
                while not await self._try_acquire_or_renew():
                    if self._clock.monotonic() + self.timing.retry_period > deadline:
                        self.is_leader.clear()
                        self._emit(
                            LeaseOutcome.LOST,
                            f"could not renew within {self.timing.renew_deadline:g}s",
                        )
                        raise LeaderLost(f"lost the lease {self.namespace}/{self.name}")
                    await self._clock.sleep(self.timing.retry_period)
                    attempts += 1
                if attempts > 1:
                    took = self._clock.monotonic() - began
                    self._emit(
                        LeaseOutcome.RENEWED_LATE,
                        f"renewed after {attempts} attempts, {took:.1f}s of the "
                        f"{self.timing.renew_deadline:g}s renew deadline",
                    )
                await self._clock.sleep(self.timing.retry_period)
        except asyncio.CancelledError:
            if self._release_on_cancel and self.is_leader.is_set():
                await asyncio.shield(self._release())
            raise

    async def _try_acquire_or_renew(self) -> bool:
        now_wall, now = self._clock.wall(), self._clock.monotonic()
        spec = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(self.timing.lease_duration),
            "renewTime": _micro_time(now_wall),
        }
        try:
            current = await self._transport.request("GET", self._path)
        except NotFound:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": {**spec, "acquireTime": _micro_time(now_wall), "leaseTransitions": 0},
            }
            return await self._write("POST", self._path.rsplit("/", 1)[0], body, "acquired")
        except (ApiError, OSError, TimeoutError) as error:
            self._emit(LeaseOutcome.ERROR, f"get lease: {error}", once=True)
            return False

        old = current.get("spec", {})
        if self._observed is None or old != self._observed.get("spec"):
            self._observed, self._observed_at = current, now
        holder = old.get("holderIdentity") or ""
        self.holder = holder
        expired = now > self._observed_at + float(old.get("leaseDurationSeconds") or 0)
        if holder and holder != self.identity and not expired:
            self._emit(LeaseOutcome.STANDBY, f"held by {holder}", once=True)
            return False
        new_spec = {**old, **spec}
        if holder != self.identity:
            new_spec["acquireTime"] = _micro_time(now_wall)
            new_spec["leaseTransitions"] = int(old.get("leaseTransitions") or 0) + 1
        body = {**current, "spec": new_spec}
        outcome = _RENEWED if holder == self.identity else LeaseOutcome.ACQUIRED
        return await self._write("PUT", self._path, body, outcome)

    async def _write(self, method: str, path: str, body: Json, outcome: str) -> bool:
        try:
            written = await self._transport.request(method, path, body=body)
        except (ApiError, OSError, TimeoutError) as error:
            # 409: someone else wrote the lease first; anything else is worth saying.
            if not (isinstance(error, ApiError) and error.status == 409):
                self._emit(LeaseOutcome.ERROR, f"{method.lower()} lease: {error}", once=True)
            return False
        self._observed, self._observed_at = written, self._clock.monotonic()
        self.holder = self.identity
        if outcome != _RENEWED:
            self._emit(outcome, f"{self.identity} holds {self.namespace}/{self.name}")
        return True

    async def _release(self) -> None:
        if self._observed is None:
            return
        spec = {**self._observed.get("spec", {}), "holderIdentity": "", "leaseDurationSeconds": 1}
        try:
            await self._transport.request("PUT", self._path, body={**self._observed, "spec": spec})
        except (ApiError, OSError, TimeoutError) as error:
            self._emit(LeaseOutcome.ERROR, f"release lease: {error}")
            return
        self.is_leader.clear()
        self._emit(LeaseOutcome.RELEASED, "released on shutdown")

    def _emit(self, outcome: str, reason: str, *, once: bool = False) -> None:
        # Standby and error repeat every retry period; record only when the story changes.
        key = f"{outcome}:{reason}"
        if once and key == self._last_outcome:
            return
        self._last_outcome = key
        self._recorder.emit(
            lease_record(
                self._clock.wall(),
                outcome,
                reason,
                lease=f"{self.namespace}/{self.name}",
                identity=self.identity,
                holder=self.holder,
            )
        )
