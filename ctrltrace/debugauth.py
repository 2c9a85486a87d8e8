"""Who may read the debug endpoint: a bearer token the API server authenticates (TokenReview)
and authorizes for the request's path with verb get (SubjectAccessReview for a non-resource
URL), as controller-runtime's ``filters.WithAuthenticationAndAuthorization`` checks its metrics.

Owns ``TokenReviews`` (the two reviews, their answers cached for a while, keyed by the token's
digest: tokens are not kept) and ``Refusal`` (401, 403, or 503 when a review cannot be made).
It sends nothing but the reviews, through the transport it is given, and serves nothing: the
debug server (``ctrltrace.debugserver``) asks it about each request.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Generic, TypeGuard, TypeVar

import aiohttp
import structlog

from ctrltrace.clock import Clock
from ctrltrace.debugwire import PREFIX
from ctrltrace.narrator import Reminders
from ctrltrace.transport import ApiError, Forbidden, Json, Transport

# How long a review's answer is reused (controller-runtime caches them too: one explain makes
# several requests and a live view polls every second, each of which would otherwise cost two
# API calls). Short, so a revoked token or binding stops working within a minute; a refusal
# shorter still (controller-runtime keeps one 30 s), so access just granted works within 10 s.
TOKEN_TTL_S = 60.0
ALLOWED_TTL_S = 60.0
DENIED_TTL_S = 10.0
_CACHED = 4_096  # answers kept, oldest forgotten first
_REVIEW_TIMEOUT_S = 10.0
T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")

_AUTHENTICATION = "tokenreviews.authentication.k8s.io"
_AUTHORIZATION = "subjectaccessreviews.authorization.k8s.io"


@dataclass(frozen=True)
class Refusal:
    status: int  # 401, 403, 503
    message: str


@dataclass(frozen=True)
class _User:
    spec: Json  # user, uid, groups, extra: what a SubjectAccessReview is about
    name: str


def _unsure(answer: object) -> TypeGuard[Refusal]:
    """A review that could not be made (503): never cached."""
    return isinstance(answer, Refusal) and answer.status == 503


class _Expiring(Generic[K, V]):
    """Answers kept until they expire, at most ``_CACHED`` of them (oldest forgotten first)."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._answers: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def get(self, key: K) -> tuple[V] | None:
        """The answer, in a tuple (an answer may be None), unless unknown or expired."""
        found = self._answers.get(key)
        if found is None or found[0] <= self._clock.monotonic():
            return None
        return (found[1],)

    def put(self, key: K, answer: V, ttl_s: float) -> None:
        self._answers[key] = (self._clock.monotonic() + ttl_s, answer)
        self._answers.move_to_end(key)
        while len(self._answers) > _CACHED:
            self._answers.popitem(last=False)


class TokenReviews:
    """Authenticates bearer tokens and authorizes them for a path, through the API server."""

    def __init__(self, transport: Transport, clock: Clock) -> None:
        self._transport = transport
        # Keyed by the token's SHA-256: the tokens themselves are not kept.
        self._users: _Expiring[str, _User | Refusal] = _Expiring(clock)
        self._access: _Expiring[tuple[str, str], Refusal | None] = _Expiring(clock)
        self._reminders = Reminders(clock)
        self._log = structlog.get_logger("ctrltrace")

    async def check(self, authorization: str, path: str) -> Refusal | None:
        """None when the ``Authorization`` header's bearer token may get ``path``."""
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return Refusal(
                401,
                "a bearer token is required (Authorization: Bearer TOKEN): pass --token or "
                "--token-file",
            )
        digest = hashlib.sha256(token.encode()).hexdigest()
        if (known := self._users.get(digest)) is None:
            user = await self._review(_AUTHENTICATION, self._authenticate(token))
            if _unsure(user):
                return user  # not the token's fault: ask again next time
            self._users.put(digest, user, TOKEN_TTL_S)
        else:
            (user,) = known
        if isinstance(user, Refusal):
            return user
        if (decided := self._access.get((digest, path))) is not None:
            return decided[0]
        refusal = await self._review(_AUTHORIZATION, self._authorize(user, path))
        if not _unsure(refusal):
            self._access.put((digest, path), refusal, DENIED_TTL_S if refusal else ALLOWED_TTL_S)
        return refusal

    async def _review(self, resource: str, review: Awaitable[T]) -> T | Refusal:
        """Wait for one review (of ``resource``); failing to make it is a 503, said in the log
        once per problem and then at the narrator's slow interval."""
        try:
            async with asyncio.timeout(_REVIEW_TIMEOUT_S):
                answer = await review
        except Forbidden:
            problem = f"the manager's identity lacks create on {resource}"
            fix = "grant it (ctrltrace rbac prints the rule)"
        except (ApiError, aiohttp.ClientError, OSError, TimeoutError) as error:
            problem = f"the API server did not answer for {resource}: {error or 'timed out'}"
            fix = "requests are refused until it does"
        else:
            if (cleared := self._reminders.clear((resource,))) is not None:
                self._log.info("Debug endpoint reviews tokens again", review=resource, **cleared)
            return answer
        if (reminder := self._reminders.report((resource,), problem)) is not None:
            self._log.warning(
                "Debug endpoint cannot check tokens", problem=problem, fix=fix, **reminder
            )
        return Refusal(503, f"cannot check the token: {problem}; {fix}")

    async def _submit(self, group: str, kind: str, spec: Json) -> Json:
        """The status the API server gives a review of ``kind`` (created, never stored)."""
        body = {"apiVersion": f"{group}/v1", "kind": kind, "spec": spec}
        answer = await self._transport.request(
            "POST", f"/apis/{group}/v1/{kind.lower()}s", body=body
        )
        return answer.get("status") or {}

    async def _authenticate(self, token: str) -> _User | Refusal:
        status = await self._submit("authentication.k8s.io", "TokenReview", {"token": token})
        if not status.get("authenticated"):
            why = status.get("error") or "not authenticated"
            return Refusal(401, f"token rejected by the API server (TokenReview): {why}")
        user = status.get("user") or {}
        spec: Json = {"user": str(user.get("username", ""))}
        for field in ("uid", "groups", "extra"):
            if user.get(field):
                spec[field] = user[field]
        return _User(spec, spec["user"])

    async def _authorize(self, user: _User, path: str) -> Refusal | None:
        spec = {**user.spec, "nonResourceAttributes": {"path": path, "verb": "get"}}
        status = await self._submit("authorization.k8s.io", "SubjectAccessReview", spec)
        if status.get("allowed"):
            return None
        return Refusal(
            403,
            f"{user.name} lacks get on {path}: grant it the ClusterRole for nonResourceURLs "
            f'["{PREFIX}/*"] (ctrltrace rbac prints it)',
        )
