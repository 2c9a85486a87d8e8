"""The debug endpoint's routes, cursors, bad input and access checks, served on 127.0.0.1:0 and
read with the ``EndpointEvidence`` client (a fake API server answers the reviews)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import functools
import json
import os
import re
import select
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import pytest
from aiohttp import web
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from structlog.testing import capture_logs

from ctrltrace import Context, Manager, Request
from ctrltrace.cli import ExitCode, main
from ctrltrace.clock import FakeClock
from ctrltrace.controller import Controller
from ctrltrace.debugauth import TokenReviews
from ctrltrace.debugserver import (
    CERT_CHECK_S,
    SELF_SIGNED_RENEW_BEFORE,
    SELF_SIGNED_VALIDITY,
    DebugServer,
    needs_auth,
    problems,
    state,
)
from ctrltrace.debugwire import NotARecord, record_from_json, record_json
from ctrltrace.evidence import (
    EvidenceError,
    EvidenceRefused,
    EvidenceUnreachable,
    EvidenceUnreadable,
    explain_from,
)
from ctrltrace.evidence.endpoint import EndpointEvidence
from ctrltrace.explain import Code
from ctrltrace.journal import Journal, JournalWriter
from ctrltrace.pki import CertificateAuthority, KeyPair, fingerprint, self_signed
from ctrltrace.records import ObjectRef, Record, Stage
from ctrltrace.ring import RecordRing
from ctrltrace.transport import Forbidden, Transport
from ctrltrace.vocabulary import Attr, ManagerOutcome

CLOCK_START = 1_000.0
T0 = 1_700_000_000.0 + CLOCK_START  # FakeClock's wall time at start
INSECURE = "--insecure-skip-tls-verify"
WIDGET = ObjectRef("example.com/v1", "Widget", "default", "web", "uid-web", "7", 2)


def pipeline() -> list[Record]:
    """A watch that synced, one event that reached a reconcile which failed, and its retry."""
    event = Record(time=T0 - 5, stage=Stage.EVENT, outcome="ADDED", object=WIDGET)
    dispatch = Record(
        time=T0 - 5,
        stage=Stage.DISPATCH,
        outcome="queued",
        controller="widget",
        object=WIDGET,
        request="default/web",
        cause_ids=(event.id,),
        attrs={"handler": "for the object itself", "event_type": "create"},
    )
    start = Record(
        time=T0 - 4,
        stage=Stage.RECONCILE_START,
        outcome="started",
        controller="widget",
        request="default/web",
        reconcile_id="r1",
        cause_ids=(dispatch.id,),
    )
    end = Record(
        time=T0 - 3,
        stage=Stage.RECONCILE,
        outcome="error",
        reason="RuntimeError: boom",
        controller="widget",
        request="default/web",
        reconcile_id="r1",
        cause_ids=(start.id,),
        attrs={"duration_s": 0.5, "error_type": "RuntimeError"},
    )
    return [
        Record(
            time=T0 - 9,
            stage=Stage.CONTROLLER,
            outcome="watching",
            controller="widget",
            attrs={"kind": "Widget", "api_version": "example.com/v1", "role": "for"},
        ),
        Record(
            time=T0 - 8,
            stage=Stage.WATCH,
            outcome="synced",
            attrs={"kind": "Widget", "api_version": "example.com/v1", "resource": "widgets"},
        ),
        Record(time=T0 - 7, stage=Stage.CONTROLLER, outcome="started", controller="widget"),
        event,
        dispatch,
        start,
        end,
        Record(
            time=T0 - 3,
            stage=Stage.REQUEUE,
            outcome="rate_limited",
            controller="widget",
            request="default/web",
            reconcile_id="r1",
            cause_ids=(end.id,),
            attrs={"delay_s": 0.01, "retries": 1},
        ),
    ]


def ring_of(records: list[Record], capacity: int = 100) -> RecordRing:
    ring = RecordRing(capacity)
    for record in records:
        ring(record)
    return ring


class FakeApiServer:
    """Answers TokenReviews and SubjectAccessReviews: ``users`` maps token → username,
    ``allowed`` is the set of (username, path) granted; ``refuse`` answers 403 to the
    manager itself."""

    def __init__(self) -> None:
        self.users = {"good": "alice", "reader": "bob"}
        self.allowed = {("bob", "/debug/ctrltrace/state")}
        self.refuse = False
        self.calls: list[str] = []

    async def request(self, method: str, path: str, *, body: Any = None, **_: Any) -> Any:
        self.calls.append(path.rsplit("/", 1)[1])
        if self.refuse:
            raise Forbidden(403, "Forbidden", "cannot create", method, path)
        spec = body["spec"]
        if path.endswith("tokenreviews"):
            user = self.users.get(spec["token"])
            if user is None:
                return {"status": {"authenticated": False, "error": "invalid bearer token"}}
            return {"status": {"authenticated": True, "user": {"username": user, "groups": ["g"]}}}
        assert spec["nonResourceAttributes"]["verb"] == "get"
        assert spec["groups"] == ["g"]
        allowed = (spec["user"], spec["nonResourceAttributes"]["path"]) in self.allowed
        return {"status": {"allowed": allowed}}


async def serving(
    records: list[Record] | RecordRing,
    scenario: Callable[[str, DebugServer], Awaitable[None]],
    *,
    auth: str = "auto",
    api: FakeApiServer | None = None,
    cert_dir: Path | None = None,
    clock: FakeClock | None = None,
) -> None:
    """``scenario`` given the server's URL: https when it asks for tokens."""
    clock = clock or FakeClock(CLOCK_START)
    manager = Manager(clock=clock)
    ring = records if isinstance(records, RecordRing) else ring_of(records)
    reviews = TokenReviews(cast(Transport, api or FakeApiServer()), clock)
    server = DebugServer(
        manager,
        ring.evidence,
        label="ring",
        address="127.0.0.1:0",
        auth=auth,
        reviews=reviews,
        cert_dir=None if cert_dir is None else str(cert_dir),
    )
    await server.start()
    scheme = "https" if server.authenticates else "http"
    try:
        await scenario(f"{scheme}://127.0.0.1:{server.port}", server)
    finally:
        await server.stop()


def fetch(url: str, token: str | None = None) -> tuple[int, bytes]:
    """GET ``url``; an https server's certificate is not checked (tests of it do)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    unverified = ssl.create_default_context()
    unverified.check_hostname = False
    unverified.verify_mode = ssl.CERT_NONE
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, context=unverified) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_explain_answers_what_explain_from_gives_on_the_same_records() -> None:
    records = pipeline()

    async def scenario(url: str, _: DebugServer) -> None:
        status, body = await asyncio.to_thread(
            fetch, f"{url}/debug/ctrltrace/explain?namespace=default&name=web&kind=widgets"
        )
        assert status == 200
        expected = explain_from(
            ring_of(records).evidence(),
            namespace="default",
            name="web",
            kind="Widget",
            now=T0,
        ).to_json()
        assert json.loads(body) == expected
        assert expected["verdict"]["code"] == "reconcile_failed"

    asyncio.run(serving(records, scenario))


def test_explaining_through_the_client_gives_the_same_answer_as_the_records() -> None:
    records = pipeline()

    async def scenario(url: str, _: DebugServer) -> None:
        def explained(evidence: Any) -> dict[str, Any]:
            return explain_from(evidence, namespace="default", name="web", now=T0).to_json()

        remote = await asyncio.to_thread(explained, EndpointEvidence(url))
        assert remote == explained(ring_of(records).evidence())
        window = await asyncio.to_thread(EndpointEvidence(url).window, T0 - 5, T0 - 4)
        assert [r.stage for r in window] == [Stage.EVENT, Stage.DISPATCH, Stage.RECONCILE_START]

    asyncio.run(serving(records, scenario))


def test_records_resume_from_a_cursor_and_page_by_limit() -> None:
    records = pipeline()

    async def scenario(url: str, _: DebugServer) -> None:
        client = EndpointEvidence(url)
        first = await asyncio.to_thread(client.tail, 0, 3)
        rest = await asyncio.to_thread(client.tail, first[-1][0], 100)
        assert [cursor for cursor, _ in first + rest] == list(range(1, len(records) + 1))
        assert [record for _, record in first + rest] == records
        assert await asyncio.to_thread(client.tail, rest[-1][0], 100) == []
        status, body = await asyncio.to_thread(fetch, f"{url}/debug/ctrltrace/records?since=6")
        lines = body.decode().splitlines()
        assert status == 200
        assert [json.loads(line)["cursor"] for line in lines] == [7, 8]

    asyncio.run(serving(records, scenario))


def test_a_ring_drops_its_oldest_records_and_says_how_many_a_cursor_lost() -> None:
    records = pipeline()
    ring = ring_of(records, capacity=3)
    assert ring.evidence().tail(0, 100) == [(6, records[5]), (7, records[6]), (8, records[7])]
    assert ring.evidence().tail(7, 100) == [(8, records[7])]
    (cursor, gap), *rest = ring.evidence().tail(2, 100)
    assert rest == [(6, records[5]), (7, records[6]), (8, records[7])]
    assert cursor == 5  # the last one lost: resuming from it loses nothing more
    assert (gap.stage, gap.outcome) == (Stage.MANAGER, ManagerOutcome.EVIDENCE_MISSING)
    assert gap.reason == (
        "3 records older than the 3 the manager keeps in memory were dropped (debug_ring_size)"
    )
    assert gap.attrs == {
        Attr.COUNT: 3,
        Attr.FIRST_TIME: records[0].time,
        Attr.LAST_TIME: records[4].time,
    }
    # All five dropped are among the controller records, over their time: explain hears it.
    [dropped] = [r for r in ring.evidence().controller_records() if r.stage is Stage.MANAGER]
    assert dropped.attrs[Attr.COUNT] == 5
    assert ring.evidence().controller_records(since=records[4].time + 1) == []


def test_a_gap_in_the_ring_reaches_the_client_and_explain_says_evidence_is_missing() -> None:
    other = dataclasses.replace(WIDGET, name="other", uid="uid-other")
    burst = [
        Record(time=T0 - 2 + i / 100, stage=Stage.EVENT, outcome="MODIFIED", object=other)
        for i in range(5)
    ]
    records = [*pipeline(), *burst]
    ring = ring_of(records, capacity=5)  # everything about default/web is gone, not the health

    async def scenario(url: str, _: DebugServer) -> None:
        client = EndpointEvidence(url)
        (cursor, gap), *rest = await asyncio.to_thread(client.tail, 2, 100)
        (served_cursor, served_gap), *served_rest = ring.evidence().tail(2, 100)
        assert (cursor, rest) == (served_cursor, served_rest)
        assert dataclasses.replace(gap, id=0) == dataclasses.replace(served_gap, id=0)
        answer = await asyncio.to_thread(
            explain_from, client, namespace="default", name="web", now=T0
        )
        assert answer.verdict.code is Code.EVIDENCE_MISSING  # not no_events
        assert "8 records older than the 5 the manager keeps in memory" in answer.verdict.message

    asyncio.run(serving(ring, scenario))


@pytest.mark.parametrize(
    ("query", "said"),
    [
        ("records?since=abc", "since='abc' is not a number"),
        ("records?limit=0", "limit must be between 1 and 10000, not 0"),
        ("records?since=-1", "since must not be negative, not -1"),
        ("explain?namespace=default", "the query parameter name is required"),
        ("explain?name=web&limit=x", "limit='x' is not a number"),
        ("evidence/everything", "no evidence query 'everything'"),
        ("evidence/about?name=web&since=yesterday", "since='yesterday' is not a number"),
    ],
)
def test_bad_query_parameters_answer_400_with_a_one_line_error(query: str, said: str) -> None:
    async def scenario(url: str, _: DebugServer) -> None:
        status, body = await asyncio.to_thread(fetch, f"{url}/debug/ctrltrace/{query}")
        assert status == 400
        error = json.loads(body)["error"]
        assert said in error
        assert "\n" not in error

    asyncio.run(serving(pipeline(), scenario))


def test_state_lists_controllers_watches_and_lease_of_the_manager() -> None:
    async def scenario(url: str, _: DebugServer) -> None:
        status, body = await asyncio.to_thread(fetch, f"{url}/debug/ctrltrace/state")
        assert status == 200
        assert json.loads(body) == {
            "manager": "ctrltrace",
            "controllers": [],
            "watches": [],
            "lease": None,
        }

    asyncio.run(serving([], scenario))


def test_loopback_needs_no_token_unless_required() -> None:
    assert not needs_auth("127.0.0.1:8082", "auto")
    assert not needs_auth("localhost:8082", "auto")
    assert not needs_auth("[::1]:8082", "auto")
    assert needs_auth("127.0.0.1:8082", "required")
    assert needs_auth(":8082", "auto")
    assert needs_auth("0.0.0.0:8082", "auto")
    assert needs_auth("10.1.2.3:8082", "auto")


def test_bad_options_are_start_up_problems(tmp_path: Path) -> None:
    assert problems("127.0.0.1:8082", "auto") == []
    assert problems("0", "required") == []
    assert problems(":http", "sometimes") == [
        "debug_auth must be one of auto, required, not 'sometimes'",
        "debug_bind_address ':http' is not HOST:PORT (or 0 to disable)",
    ]
    assert Manager(debug_auth="never").problems() == [
        "debug_auth must be one of auto, required, not 'never'"
    ]
    assert Manager(debug_ring_size=0, debug_cert_dir=str(tmp_path)).problems() == [
        "debug_ring_size must be at least 1, not 0",
        f"debug_cert_dir {str(tmp_path)!r} lacks tls.crt and tls.key",
    ]
    (tmp_path / "tls.crt").write_text("")
    assert problems("127.0.0.1:0", "auto", str(tmp_path)) == [
        f"debug_cert_dir {str(tmp_path)!r} lacks tls.key"
    ]


def test_required_auth_reviews_the_token_and_the_path_and_caches_the_answers() -> None:
    api = FakeApiServer()

    async def scenario(url: str, server: DebugServer) -> None:
        assert server.authenticates
        state = f"{url}/debug/ctrltrace/state"
        status, body = await asyncio.to_thread(fetch, state)
        assert (status, json.loads(body)["error"]) == (
            401,
            "a bearer token is required (Authorization: Bearer TOKEN): pass --token or "
            "--token-file",
        )
        status, body = await asyncio.to_thread(fetch, state, "stolen")
        assert status == 401
        assert json.loads(body)["error"] == (
            "token rejected by the API server (TokenReview): invalid bearer token"
        )
        status, body = await asyncio.to_thread(fetch, state, "good")
        assert status == 403
        assert json.loads(body)["error"].startswith("alice lacks get on /debug/ctrltrace/state:")
        assert (await asyncio.to_thread(fetch, state, "reader"))[0] == 200
        calls = len(api.calls)
        assert (await asyncio.to_thread(fetch, state, "reader"))[0] == 200
        assert (await asyncio.to_thread(fetch, state, "good"))[0] == 403
        assert len(api.calls) == calls  # both answers were cached

    asyncio.run(serving(pipeline(), scenario, auth="required", api=api))


def test_the_client_says_which_refusal_it_met() -> None:
    async def scenario(url: str, _: DebugServer) -> None:
        with pytest.raises(EvidenceRefused, match=r"refused the request \(401\): a bearer token"):
            await asyncio.to_thread(EndpointEvidence(url, insecure=True).lease_records)
        with pytest.raises(EvidenceRefused, match=r"\(403\): bob lacks get on /debug/ctrltrace/"):
            await asyncio.to_thread(
                EndpointEvidence(url, token="reader", insecure=True).lease_records
            )

    asyncio.run(serving(pipeline(), scenario, auth="required"))


def test_a_manager_that_may_not_review_tokens_answers_503_in_one_line() -> None:
    api = FakeApiServer()
    api.refuse = True

    async def scenario(url: str, _: DebugServer) -> None:
        status, body = await asyncio.to_thread(fetch, f"{url}/debug/ctrltrace/state", "good")
        assert status == 503
        assert json.loads(body)["error"] == (
            "cannot check the token: the manager's identity lacks create on "
            "tokenreviews.authentication.k8s.io; grant it (ctrltrace rbac prints the rule)"
        )
        with pytest.raises(EvidenceUnreadable, match="answered 503: cannot check the token"):
            await asyncio.to_thread(
                EndpointEvidence(url, token="good", insecure=True).lease_records
            )
        assert api.calls == ["tokenreviews", "tokenreviews"]  # a failed review is not cached

    asyncio.run(serving(pipeline(), scenario, auth="required", api=api))


def test_nothing_listening_is_unreachable() -> None:
    with pytest.raises(EvidenceUnreachable, match=r"cannot reach http://127.0.0.1:9: "):
        EndpointEvidence("http://127.0.0.1:9", timeout_s=5).lease_records()


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        (web.Response(text="<html>hello</html>"), r"not ctrltrace evidence \(not JSON\)"),
        (web.json_response({"records": [{"stage": "x"}]}), r"\(unknown stage 'x'\)"),
        (web.json_response({"items": []}), r"\(no list of records\)"),
        (web.Response(status=404, text="404: Not Found"), r"\(HTTP 404\)"),
    ],
)
def test_a_reply_that_is_not_evidence_is_unreadable(answer: web.Response, said: str) -> None:
    async def scenario() -> None:
        app = web.Application()

        async def answered(_: web.Request) -> web.Response:
            return answer

        app.router.add_get("/debug/ctrltrace/evidence/leases", answered)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        try:
            with pytest.raises(EvidenceUnreadable, match=said):
                await asyncio.to_thread(EndpointEvidence(url).lease_records)
        finally:
            await runner.cleanup()

    asyncio.run(scenario())


def test_a_url_that_is_not_http_is_refused_before_any_request() -> None:
    with pytest.raises(ValueError, match="expected http://HOST:PORT or https://HOST:PORT"):
        EndpointEvidence("journal.sqlite")


def test_a_record_survives_its_json_form_and_a_malformed_one_is_refused() -> None:
    for record in pipeline():
        assert record_from_json(json.loads(json.dumps(record_json(record)))) == record
    data = record_json(pipeline()[4])
    with pytest.raises(NotARecord, match="a record's cause_ids are a list of integers"):
        record_from_json({**data, "cause_ids": ["1"]})
    with pytest.raises(NotARecord, match="unknown stage 'nope'"):
        record_from_json({**data, "stage": "nope"})
    with pytest.raises(NotARecord, match="a record's generation is missing"):
        record_from_json({**data, "object": {**data["object"], "generation": "2"}})
    assert isinstance(EvidenceUnreadable("x"), EvidenceError)


def test_the_ring_answers_every_query_as_a_journal_of_the_same_records(tmp_path: Path) -> None:
    child = ObjectRef("v1", "ConfigMap", "default", "child", "uid-c", "3", 1)
    child_event = Record(time=T0 - 6, stage=Stage.EVENT, outcome="ADDED", object=child)
    mapped = Record(
        time=T0 - 6,
        stage=Stage.DISPATCH,
        outcome="queued",
        controller="widget",
        object=child,
        request="default/web",
        cause_ids=(child_event.id,),
    )
    records = [child_event, mapped, *pipeline()]
    records[-3] = dataclasses.replace(records[-3], cause_ids=(records[-4].id, mapped.id))
    with JournalWriter(tmp_path / "journal.sqlite") as writer:
        for record in records:
            writer(record)
    ring = ring_of(records).evidence()
    with Journal(tmp_path / "journal.sqlite") as journal:
        for namespace, name, kind in [
            ("default", "web", None),
            ("default", "child", None),
            ("default", "web", "ConfigMap"),
        ]:
            assert ring.about(namespace, name, kind=kind) == journal.about(
                namespace, name, kind=kind
            )
        assert ring.about("default", "child")[-1].stage == Stage.REQUEUE  # the owner's retry
        assert ring.about("default", "web", since=T0 - 4) == journal.about(
            "default", "web", since=T0 - 4
        )
        assert ring.watch_records(kind="Widget") == journal.watch_records(kind="Widget")
        assert ring.controller_records() == journal.controller_records()
        assert ring.lease_records() == journal.lease_records() == []
        assert ring.reconciles(since=T0 - 4) == journal.reconciles(since=T0 - 4)
        assert ring.window(T0 - 6, T0 - 4) == journal.window(T0 - 6, T0 - 4)


class ServedInThread:
    """A debug server over ``records`` on an event loop in a thread: for commands that block."""

    def __init__(self, records: list[Record], auth: str = "auto") -> None:
        self._records = records
        self._auth = auth
        self._ready = threading.Event()
        self._done: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()))
        self.url = ""

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._done = self._loop.create_future()

        async def until_done(url: str, _: DebugServer) -> None:
            self.url = url
            self._ready.set()
            assert self._done is not None
            await self._done

        await serving(self._records, until_done, auth=self._auth)

    def __enter__(self) -> str:
        self._thread.start()
        assert self._ready.wait(10)
        return self.url

    def __exit__(self, *_: object) -> None:
        assert self._loop is not None and self._done is not None
        self._loop.call_soon_threadsafe(self._done.set_result, None)
        self._thread.join()


def _command(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    assert "Traceback" not in result.output
    return result.exit_code, result.output.strip()


def test_explain_from_an_endpoint_prints_what_explain_prints_from_a_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = pipeline()
    journal = tmp_path / "journal.sqlite"
    with JournalWriter(journal) as writer:
        for record in records:
            writer(record)
    # Both commands answer "as of now": the same now, or a second's tick between them shows.
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now)
    with ServedInThread(records) as url:
        for view in ([], ["--json"]):
            remote = _command("explain", "default/web", "--kind", "widget", "--from", url, *view)
            local = _command(
                "explain", "default/web", "--kind", "widget", "--journal", str(journal), *view
            )
            assert remote[0] == local[0] == ExitCode.FAILED  # reconcile_failed
            assert remote[1] == local[1]


def test_explain_from_says_in_one_line_why_it_could_not_read_the_endpoint(
    tmp_path: Path,
) -> None:
    code, output = _command("explain", "a/b", "--from", "http://127.0.0.1:9")
    assert code == ExitCode.UNREACHABLE
    assert (
        output
        == "ctrltrace: error: cannot reach http://127.0.0.1:9: [Errno 111] Connection refused"
    )
    code, output = _command("explain", "a/b", "--from", "127.0.0.1:8082")
    assert code == ExitCode.USAGE and "expected http://HOST:PORT" in output
    code, output = _command("explain", "a/b", "--token", "x")
    assert code == ExitCode.USAGE and "go with --from URL" in output
    code, output = _command("explain", "a/b", "--from", "http://a", "--traces", "http://b")
    assert code == ExitCode.USAGE and "give --from or --traces, not both" in output
    (tmp_path / "token").write_text("reader\n")
    with ServedInThread(pipeline(), auth="required") as url:
        code, output = _command("explain", "a/b", "--from", url)
        assert code == ExitCode.UNREACHABLE and "pass --certificate-authority" in output
        code, output = _command("explain", "a/b", "--from", url.replace("https:", "http:"))
        assert code == ExitCode.UNREACHABLE
        assert output.endswith("; an endpoint that asks for a token serves https: try https://")
        code, output = _command(
            "explain", "a/b", "--from", url, "--certificate-authority", str(tmp_path / "token")
        )
        assert code == ExitCode.USAGE
        assert output.startswith(
            f"ctrltrace: error: --certificate-authority {tmp_path / 'token'}: not a PEM certificate"
        )
        code, output = _command("explain", "a/b", "--from", url, INSECURE)
        assert code == ExitCode.ENVIRONMENT and "(401): a bearer token is required" in output
        code, output = _command("explain", "a/b", "--from", url, INSECURE, "--token", "good")
        assert code == ExitCode.ENVIRONMENT
        assert "(403): alice lacks get on /debug/ctrltrace/records" in output
        code, output = _command(
            "explain", "a/b", "--from", url, INSECURE, "--token-file", str(tmp_path / "token")
        )
        assert code == ExitCode.ENVIRONMENT and "bob lacks get" in output  # the file was read
        code, output = _command(
            "explain", "a/b", "--from", url, "--token", "x", "--token-file", "t"
        )
        assert code == ExitCode.USAGE and "not both" in output


def test_state_gives_each_in_flight_request_its_age_and_the_queue_its_depth() -> None:
    clock = FakeClock(CLOCK_START)
    manager = Manager(clock=clock)
    controller = Controller("widget", _noop, recorder=manager.recorder, clock=clock)
    manager.controllers.append(controller)
    controller.stats.in_flight[Request("default", "web")] = CLOCK_START - 2.5
    controller.queue.add(Request("default", "next"))
    controller.queue.add_after(Request("default", "later"), 60)
    (found,) = state(manager)["controllers"]
    assert found == {
        "name": "widget",
        "started": False,
        "workers": 1,
        "active_workers": 0,
        "queue": {"ready": 1, "delayed": 1, "processing": 0},
        "in_flight": [{"request": "default/web", "age_s": 2.5}],
        "waiting_for": [],
    }


async def _noop(ctx: Context, request: Request) -> None:
    return None


def test_records_that_cannot_be_read_answer_503_in_one_line(tmp_path: Path) -> None:
    async def scenario() -> None:
        manager = Manager(clock=FakeClock(CLOCK_START))
        missing = functools.partial(Journal, tmp_path / "gone.sqlite")
        server = DebugServer(
            manager, missing, label="journal", address="127.0.0.1:0", auth="auto", reviews=None
        )
        await server.start()
        try:
            url = f"http://127.0.0.1:{server.port}"
            with pytest.raises(EvidenceUnreadable, match="answered 503: cannot read the manager"):
                await asyncio.to_thread(EndpointEvidence(url).lease_records)
        finally:
            await server.stop()

    asyncio.run(scenario())


def test_an_endpoint_asking_for_tokens_serves_the_certificate_it_is_given(
    tmp_path: Path,
) -> None:
    authority = CertificateAuthority("cert-manager's CA")
    pair = authority.serving()
    (tmp_path / "ca.pem").write_bytes(authority.cert_pem)
    (tmp_path / "tls.crt").write_bytes(pair.cert_pem)
    (tmp_path / "tls.key").write_bytes(pair.key_pem)
    records = pipeline()

    renewed = authority.serving()
    clock = FakeClock(CLOCK_START)

    async def served_fingerprint(url: str) -> str:
        host, port = url.removeprefix("https://").split(":")
        pem = await asyncio.to_thread(ssl.get_server_certificate, (host, int(port)))
        return fingerprint(pem.encode())

    async def scenario(url: str, _: DebugServer) -> None:
        assert url.startswith("https://")
        trusted = EndpointEvidence(url, token="good", certificate_authority=tmp_path / "ca.pem")
        assert await asyncio.to_thread(trusted.controller_records) == records[:3:2]
        with pytest.raises(
            EvidenceUnreachable,
            match=r"CERTIFICATE_VERIFY_FAILED.*; pass --certificate-authority FILE "
            r"\(or --insecure-skip-tls-verify\)$",
        ):
            await asyncio.to_thread(EndpointEvidence(url, token="good").controller_records)
        # Caught half-written, the new certificate beside the old key: not served, and the
        # old pair still is.
        await asyncio.to_thread(replace_pair, tmp_path, KeyPair(renewed.cert_pem, pair.key_pem))
        await clock.advance(CERT_CHECK_S)
        for _attempt in range(100):  # the check reads the files in a worker thread
            if any(log["event"] == "Debug endpoint certificate not reloaded" for log in logs):
                break
            await asyncio.sleep(0.01)
        assert await served_fingerprint(url) == fingerprint(pair.cert_pem)
        assert await asyncio.to_thread(trusted.controller_records) == records[:3:2]
        # Renewed as the kubelet updates a mounted Secret: new files in place of the old.
        await asyncio.to_thread(replace_pair, tmp_path, renewed)
        await clock.advance(CERT_CHECK_S - 1)
        assert await served_fingerprint(url) == fingerprint(pair.cert_pem)
        await clock.advance(1)
        for _attempt in range(100):  # the reload runs in a worker thread
            if await served_fingerprint(url) == fingerprint(renewed.cert_pem):
                break
            await asyncio.sleep(0.01)
        assert await served_fingerprint(url) == fingerprint(renewed.cert_pem)
        assert await asyncio.to_thread(trusted.controller_records) == records[:3:2]

    api = FakeApiServer()
    api.allowed.add(("alice", "/debug/ctrltrace/evidence/controllers"))
    with capture_logs() as logs:
        asyncio.run(
            serving(records, scenario, auth="required", api=api, cert_dir=tmp_path, clock=clock)
        )
    (served,) = [log for log in logs if log["event"] == "Serving debug endpoint"]
    assert served["certificate"] == str(tmp_path / "tls.crt")
    assert served["sha256_fingerprint"] == fingerprint(pair.cert_pem)
    (reloaded,) = [log for log in logs if log["event"] == "Debug endpoint certificate reloaded"]
    assert reloaded["sha256_fingerprint"] == fingerprint(renewed.cert_pem)
    (refused,) = [log for log in logs if log["event"] == "Debug endpoint certificate not reloaded"]
    assert "KEY_VALUES_MISMATCH" in refused["error"]


def replace_pair(directory: Path, pair: KeyPair) -> None:
    for name, data in (("tls.crt", pair.cert_pem), ("tls.key", pair.key_pem)):
        (directory / f"{name}.new").write_bytes(data)
        (directory / f"{name}.new").replace(directory / name)


def modes(directory: Path) -> dict[str, int]:
    """The permission bits of ``directory``'s subdirectories and their files, by name."""
    return {
        str(path.relative_to(directory)): path.stat().st_mode & 0o777
        for path in sorted(directory.glob("**/*"))
    }


def key_holders(directory: Path) -> list[str]:
    """Where a key written for ``ssl`` could still be: files under ``directory`` and the
    in-memory files (memfd) this process holds open."""
    held = []
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):  # closed meanwhile (the listing's own among them)
            held.append(str(fd.readlink()))
    return sorted(modes(directory)) + [target for target in held if target.startswith("/memfd:")]


@pytest.mark.parametrize("in_memory", [True, False], ids=["memfd", "no-memfd"])
def test_without_a_certificate_it_serves_a_self_signed_one_and_keeps_no_file_of_it(
    in_memory: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    if not in_memory:  # as where os.memfd_create does not exist (not Linux)
        monkeypatch.delattr(os, "memfd_create")
    left: list[str] = []

    async def scenario(url: str, _: DebugServer) -> None:
        assert url.startswith("https://")
        # Nothing a SIGKILL from now on would leave behind.
        left.extend(await asyncio.to_thread(key_holders, tmp_path))
        host, port = url.removeprefix("https://").split(":")
        pem = await asyncio.to_thread(ssl.get_server_certificate, (host, int(port)))
        (served,) = [log for log in logs if log["event"] == "Serving debug endpoint"]
        assert served["certificate"] == "self-signed"
        assert served["sha256_fingerprint"] == fingerprint(pem.encode())
        client = EndpointEvidence(url, token="reader", insecure=True)
        assert await asyncio.to_thread(client.lease_records) == []
        with pytest.raises(EvidenceUnreachable, match="CERTIFICATE_VERIFY_FAILED"):
            await asyncio.to_thread(EndpointEvidence(url, token="reader").lease_records)

    api = FakeApiServer()
    api.allowed.add(("bob", "/debug/ctrltrace/evidence/leases"))
    with capture_logs() as logs:
        asyncio.run(serving(pipeline(), scenario, auth="required", api=api))
    assert left == []
    assert key_holders(tmp_path) == []


def test_a_self_signed_certificate_is_made_anew_a_day_before_it_expires(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    clock = FakeClock(CLOCK_START)
    lifetime = (SELF_SIGNED_VALIDITY - SELF_SIGNED_RENEW_BEFORE).total_seconds()
    served: list[str] = []
    left: list[str] = []

    async def served_fingerprint(url: str) -> str:
        host, port = url.removeprefix("https://").split(":")
        pem = await asyncio.to_thread(ssl.get_server_certificate, (host, int(port)))
        return fingerprint(pem.encode())

    async def scenario(url: str, _: DebugServer) -> None:
        served.append(await served_fingerprint(url))
        await clock.advance(lifetime - CERT_CHECK_S)
        assert await served_fingerprint(url) == served[0]  # not yet
        for _attempt in range(200):  # each check reads the files in a worker thread
            await clock.advance(CERT_CHECK_S)
            if await served_fingerprint(url) != served[0]:
                break
            await asyncio.sleep(0.01)
        served.append(await served_fingerprint(url))
        left.extend(await asyncio.to_thread(key_holders, tmp_path))
        client = EndpointEvidence(url, token="reader", insecure=True)
        assert await asyncio.to_thread(client.lease_records) == []

    api = FakeApiServer()
    api.allowed.add(("bob", "/debug/ctrltrace/evidence/leases"))
    with capture_logs() as logs:
        asyncio.run(serving(pipeline(), scenario, auth="required", api=api, clock=clock))
    assert served[1] != served[0]
    (reloaded,) = [log for log in logs if log["event"] == "Debug endpoint certificate reloaded"]
    assert reloaded["sha256_fingerprint"] == served[1]
    assert left == []  # the renewed pair is kept in memory only, as the first


def test_a_self_signed_certificate_names_the_bound_host_and_loopback() -> None:
    pair = self_signed("ctrltrace-debug", ["10.1.2.3", "localhost", "127.0.0.1"])
    cert = x509.load_pem_x509_certificate(pair.cert_pem)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == [
        "10.1.2.3",
        "127.0.0.1",
    ]
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert cert.issuer == cert.subject
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.not_valid_after_utc - cert.not_valid_before_utc <= datetime.timedelta(days=8)


def on_a_terminal(*args: str) -> tuple[int, str]:
    """``ctrltrace ARGS`` on a pseudo-terminal, q pressed once the failure screen shows its
    exit code: the exit code and the lines left on the terminal after the view closed."""
    primary, secondary = os.openpty()
    env = {**os.environ, "TERM": "xterm-256color"}
    command = [sys.executable, "-m", "ctrltrace", *args]
    process = subprocess.Popen(
        command, stdin=secondary, stdout=secondary, stderr=secondary, env=env
    )
    os.close(secondary)
    shown, pressed = b"", False
    try:
        while process.poll() is None or select.select([primary], [], [], 0)[0]:
            if not select.select([primary], [], [], 0.1)[0]:
                continue
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # the terminal closed with the process
                break
            shown += chunk
            if not pressed and b"(exit code" in shown:
                os.write(primary, b"q")
                pressed = True
        code = process.wait(30)
    finally:
        os.close(primary)
        if process.poll() is None:
            process.kill()
    after = shown.rpartition(b"\x1b[?1049l")[2]  # what follows leaving the alternate screen
    text = re.sub(r"\x1b\[[0-9;?<>]*[A-Za-z]", "", after.decode(errors="replace"))
    return code, text.strip()


def test_tui_from_on_a_terminal_exits_with_explains_code_for_the_failure() -> None:
    code, said = on_a_terminal("tui", "--from", "http://127.0.0.1:9")
    assert (code, said) == (
        ExitCode.UNREACHABLE,
        "ctrltrace: error: cannot reach http://127.0.0.1:9: [Errno 111] Connection refused",
    )
    code, said = on_a_terminal("tui", "--traces", "http://127.0.0.1:9")
    assert code == ExitCode.UNREACHABLE
    assert said.startswith("ctrltrace: error: cannot reach Jaeger at http://127.0.0.1:9")
    assert "\n" not in said
    with ServedInThread(pipeline(), auth="required") as url:
        code, said = on_a_terminal("tui", "--from", url, INSECURE)
    assert code == ExitCode.ENVIRONMENT
    assert said.startswith(f"ctrltrace: error: {url} refused the request (401): a bearer token")
    assert "\n" not in said


def test_tui_from_fails_at_once_in_one_line_on_an_endpoint_it_cannot_read() -> None:
    code, output = _command("tui", "--from", "http://127.0.0.1:9")  # no terminal here
    assert (code, output) == (
        ExitCode.UNREACHABLE,
        "ctrltrace: error: cannot reach http://127.0.0.1:9: [Errno 111] Connection refused",
    )
    with ServedInThread(pipeline(), auth="required") as url:
        code, output = _command("tui", "--from", url, INSECURE)
        assert code == ExitCode.ENVIRONMENT and "(401): a bearer token is required" in output
    with ServedInThread(pipeline()) as url:
        code, output = _command("tui", "--from", url)  # readable: then it wants a terminal
        assert code == ExitCode.USAGE and "needs a terminal" in output
