"""Evidence from the trace backend: ctrltrace's spans, read back from Jaeger as records.

Owns reading Jaeger's query API v3 over HTTP (``/api/v3/services``, ``/api/v3/operations``,
``/api/v3/traces``, which answers OTLP JSON) for a time window, from every service and replica
that exported there, and answering the ``Evidence`` queries from the records ``rebuild`` makes
of those spans, so that explain decides with the same procedure as on a journal. Where the
exporting process sampled traces (``ctrltrace.sampler`` on its resource is not always-on),
unsampled traces are missing evidence: a MANAGER ``evidence_missing`` record over the window
says so, and explain warns that the answer may be incomplete; the same where Jaeger gave fewer
traces than the window holds.

It may not import the OpenTelemetry SDK or the exporters (the TUI reads through it), decide
anything (explain does), or write anywhere.
"""

from __future__ import annotations

import datetime
import json
import math
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Self

from ctrltrace.evidence import Closing, EvidenceRefused, EvidenceUnreachable, EvidenceUnreadable
from ctrltrace.evidence.rebuild import Rebuild, records_from_otlp
from ctrltrace.records import Record, Stage
from ctrltrace.spanmodel import stage_of
from ctrltrace.vocabulary import Attr, evidence_missing_record

__all__ = ["DEFAULT_WINDOW", "NUM_TRACES", "TraceEvidence", "records_from_otlp"]

DEFAULT_WINDOW = 3600.0
"""Seconds of spans read when no ``since`` is asked for."""
NUM_TRACES = 1_000
"""Traces asked for per service and span name: Jaeger's memory store wants no more than its
``max_traces``."""
_FOLLOW_OVERLAP = 300.0  # a refresh reads again this far back: spans arrive when they end

# -- answering explain's queries ---------------------------------------------------------------


def _about(
    records: Sequence[Record], namespace: str, name: str, kind: str | None, since: float | None
) -> list[Record]:
    """Journal.about over rebuilt records (whose ids are unique): the object's records and its
    key's, their causes one step back, and the reconciles of other requests (an owner's) its
    dispatches queued, with their ends, requeues and the retries those started."""
    key = f"{namespace}/{name}" if namespace else name
    earliest = -float("inf") if since is None else since
    recent = [record for record in records if record.time >= earliest]
    found: dict[int, Record] = {}
    for record in recent:
        ref = record.object
        if ref is not None and ref.namespace == namespace and ref.name == name:
            if kind is None or ref.kind == kind:
                found[record.id] = record
        elif record.request == key:
            found[record.id] = record
    by_id = {record.id: record for record in records}
    for record in list(found.values()):
        if record.object is not None:
            for cause_id in record.cause_ids:
                cause = by_id.get(cause_id)
                if cause is not None and cause.object is not None:
                    found[cause.id] = cause
    causes = {
        record.id
        for record in found.values()
        if record.stage is Stage.DISPATCH and record.request not in ("", key)
    }
    while causes:
        started = {
            (record.request, record.reconcile_id)
            for record in recent
            if record.stage is Stage.RECONCILE_START
            and record.id not in found
            and any(cause in causes for cause in record.cause_ids)
        }
        causes = set()
        for record in recent:
            if (record.request, record.reconcile_id) in started:
                found[record.id] = record
                if record.stage is Stage.REQUEUE:
                    causes.add(record.id)
    return sorted(found.values(), key=lambda record: record.time)


def _newer(records: Iterable[Record], stages: Iterable[Stage], since: float | None) -> list[Record]:
    wanted = frozenset(stages)
    earliest = -float("inf") if since is None else since
    return [r for r in records if r.stage in wanted and r.time >= earliest]


def _cursor(record: Record) -> int:
    return int(record.time * 1e6)  # µs: later records, later cursors


Fetch = Callable[[str, Mapping[str, str]], Any]
"""GET a path of the query API with parameters; its decoded JSON (None for a 404)."""


class TraceEvidence(Closing):
    """Records rebuilt from the spans in a Jaeger query service: an ``Evidence``.

    Spans are read on the first query, from ``since`` (the first query's, else
    ``DEFAULT_WINDOW`` back) until now, for every service and every span name of ctrltrace's;
    ``tail`` reads again, for what has arrived since (at most every ``refresh_s`` on the
    ``monotonic`` clock). ``?service=NAME`` on the URL (repeated,
    or ``services``) reads only those services: the controller's, where one Jaeger holds
    several controllers whose health must not mix. Where a search returns ``num_traces``
    traces, older ones may be missing: an ``evidence_missing`` record says so. ``fetch``
    replaces the HTTP client (tests).
    """

    def __init__(
        self,
        url: str,
        *,
        services: Sequence[str] = (),
        timeout_s: float = 10.0,
        now: Callable[[], float] = time.time,
        refresh_s: float = 2.0,
        num_traces: int = NUM_TRACES,
        monotonic: Callable[[], float] = time.monotonic,
        fetch: Fetch | None = None,
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        asked = [value for key, value in urllib.parse.parse_qsl(parts.query) if key == "service"]
        self.url = urllib.parse.urlunsplit(parts._replace(query="", fragment="")).rstrip("/")
        self._services = (*services, *asked)
        self._timeout_s = timeout_s
        self._now = now
        self._refresh_s = refresh_s
        self._num_traces = num_traces
        self._truncated: dict[tuple[str, str], Record] = {}  # per service and span name
        self._monotonic = monotonic
        self._refreshed = -math.inf
        self._fetch = fetch or self._get
        self._spans: dict[str, Mapping[str, Any]] = {}
        self._read_from: float | None = None
        self._read_until = 0.0
        self._records: list[Record] | None = None

    @property
    def label(self) -> str:
        return f"traces at {self.url}"

    def checked(self) -> Self:
        """This source, once Jaeger has answered one small request (its services): raises
        ``EvidenceError`` when it does not answer, refuses us or is not Jaeger's API v3, so
        that opening it fails on those, as opening a journal fails on a missing file."""
        self._answer("/api/v3/services", {}, "services")
        return self

    # -- Evidence ------------------------------------------------------------------------------

    def about(
        self, namespace: str, name: str, *, kind: str | None = None, since: float | None = None
    ) -> list[Record]:
        return _about(self._loaded(since), namespace, name, kind, since)

    def watch_records(self, kind: str | None = None, since: float | None = None) -> list[Record]:
        records = _newer(self._loaded(since), (Stage.WATCH,), since)
        return records if kind is None else [r for r in records if r.attrs.get(Attr.KIND) == kind]

    def lease_records(self, since: float | None = None) -> list[Record]:
        return _newer(self._loaded(since), (Stage.LEASE,), since)

    def controller_records(self, since: float | None = None) -> list[Record]:
        return _newer(self._loaded(since), (Stage.CONTROLLER, Stage.MANAGER), since)

    def reconciles(self, since: float | None = None) -> list[Record]:
        return _newer(self._loaded(since), (Stage.RECONCILE_START, Stage.RECONCILE), since)

    def window(self, t0: float, t1: float) -> list[Record]:
        return [record for record in self._loaded(t0) if t0 <= record.time <= t1]

    def tail(self, after: int = 0, limit: int = 1_000) -> list[tuple[int, Record]]:
        """Records after cursor ``after`` (µs since the epoch). Once those read are all
        taken, Jaeger is asked again for new spans, at most every ``refresh_s``."""
        newer = self._after(after, limit)
        if not newer and self._monotonic() - self._refreshed >= self._refresh_s:
            self._read(max(self._read_until - _FOLLOW_OVERLAP, self._read_from or 0.0))
            newer = self._after(after, limit)
        return newer

    def _after(self, after: int, limit: int) -> list[tuple[int, Record]]:
        newer = [(_cursor(r), r) for r in self._loaded(None) if _cursor(r) > after]
        if len(newer) > limit:  # never cut between records of one cursor
            last = newer[limit - 1][0]
            newer = [found for found in newer if found[0] <= last]
        return newer

    def close(self) -> None:
        self._spans.clear()
        self._records = None

    # -- reading -------------------------------------------------------------------------------

    def _loaded(self, since: float | None) -> list[Record]:
        if self._records is None:
            self._read(since if since is not None else self._now() - DEFAULT_WINDOW)
        assert self._records is not None
        return self._records

    def _read(self, start: float) -> None:
        until = self._now()
        self._read_from = start if self._read_from is None else min(start, self._read_from)
        services = self._services or tuple(self._answer("/api/v3/services", {}, "services"))
        documents: list[Mapping[str, Any]] = []
        for service in services:
            operations = self._answer("/api/v3/operations", {"service": service}, "operations")
            for operation in operations:
                name = str(operation.get("name", "")) if isinstance(operation, Mapping) else ""
                if stage_of(name) is None:
                    continue
                found = self._fetch(
                    "/api/v3/traces",
                    {
                        "query.service_name": service,
                        "query.operation_name": name,
                        "query.start_time_min": _rfc3339(start),
                        "query.start_time_max": _rfc3339(until),
                        "query.num_traces": str(self._num_traces),
                    },
                )
                if found is None:
                    continue
                document = self._result(found)
                documents.append(document)
                earliest = _earliest_of_each_trace(document)
                if len(earliest) >= self._num_traces:  # Jaeger answers the newest first
                    self._truncated[(service, name)] = evidence_missing_record(
                        start,
                        min(earliest.values()) / 1e9,
                        f"Jaeger gave only the newest {len(earliest)} traces of {name!r} "
                        f"from {service}: older ones in the window were not read (a shorter "
                        "--since reads them all)",
                    )
        for document in documents:  # a span seen again (a longer trace now) replaces itself
            self._spans.update(_keyed(document))
        self._read_until = until
        self._refreshed = self._monotonic()
        rebuild = Rebuild([{"resourceSpans": list(self._spans.values())}])
        records = rebuild.records()
        if not records:
            raise EvidenceUnreadable(
                f"no ctrltrace spans in {self.url} between {_rfc3339(self._read_from)} and "
                f"{_rfc3339(until)} (services: {', '.join(services) or 'none'})"
            )
        sampling = [
            evidence_missing_record(
                self._read_from,
                until,
                f"{replica} samples traces ({sampler}): spans of "
                "traces it left out were never exported",
                replica=replica,
            )
            for replica, sampler in sorted(rebuild.samplers.items())
        ]
        self._records = records + sampling + list(self._truncated.values())

    def _answer(self, path: str, params: Mapping[str, str], key: str) -> list[Any]:
        answer = self._fetch(path, params)
        found = answer.get(key) if isinstance(answer, Mapping) else None
        if not isinstance(found, list):
            raise EvidenceUnreadable(f"{self.url}{path} did not answer as Jaeger's query API v3")
        return found

    def _result(self, answer: Any) -> Mapping[str, Any]:
        result = answer.get("result") if isinstance(answer, Mapping) else None
        if not isinstance(result, Mapping):
            raise EvidenceUnreadable(
                f"{self.url}/api/v3/traces did not answer OTLP JSON as Jaeger's API v3 does"
            )
        return result

    def _get(self, path: str, params: Mapping[str, str]) -> Any:
        query = "?" + urllib.parse.urlencode(params) if params else ""
        url = f"{self.url}{path}{query}"
        try:
            with urllib.request.urlopen(url, timeout=self._timeout_s) as reply:  # noqa: S310
                body = reply.read()
        except urllib.error.HTTPError as error:
            if error.code == 404:  # how API v3 says "no traces found"
                return None
            if error.code in (401, 403):
                raise EvidenceRefused(
                    f"{self.url} refused the request: HTTP {error.code}"
                ) from None
            raise EvidenceUnreadable(
                f"{self.url}{path} answered HTTP {error.code}: {_first_line(error.read())}"
            ) from None
        except (urllib.error.URLError, OSError, ValueError) as error:
            reason = getattr(error, "reason", error)
            raise EvidenceUnreachable(f"cannot reach Jaeger at {self.url}: {reason}") from None
        try:
            return json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise EvidenceUnreadable(
                f"{self.url}{path} did not answer JSON: not Jaeger's query API v3?"
            ) from None


def _earliest_of_each_trace(document: Mapping[str, Any]) -> dict[str, int]:
    """Each trace's id in an OTLP-JSON document, with its earliest span's start (ns)."""
    earliest: dict[str, int] = {}
    for resource_spans in document.get("resourceSpans") or ():
        for scope_spans in resource_spans.get("scopeSpans") or ():
            for span in scope_spans.get("spans") or ():
                trace_id, start = str(span.get("traceId")), int(span.get("startTimeUnixNano", 0))
                earliest[trace_id] = min(start, earliest.get(trace_id, start))
    return earliest


def _keyed(document: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Each span of ``document`` alone in its resource and scope, keyed by trace and span id."""
    for resource_spans in document.get("resourceSpans") or ():
        for scope_spans in resource_spans.get("scopeSpans") or ():
            for span in scope_spans.get("spans") or ():
                yield (
                    f"{span.get('traceId')}{span.get('spanId')}",
                    {
                        "resource": resource_spans.get("resource") or {},
                        "scopeSpans": [{"scope": scope_spans.get("scope"), "spans": [span]}],
                    },
                )


def _first_line(body: bytes) -> str:
    return body.decode("utf-8", "replace").strip().splitlines()[0][:200] if body.strip() else ""


def _rfc3339(seconds: float) -> str:
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.isoformat().replace("+00:00", "Z")
