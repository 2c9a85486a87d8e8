"""The manager's debug endpoint against the real API server (issue 21).

With ``debug_auth="required"`` on loopback, tokens are reviewed by the real kube-apiserver: a
service account bound to the reader ClusterRole gets the explanation, one without it 403, no
token 401; all of it over https, with the certificate given in ``debug_cert_dir`` (verified with
its CA) or the self-signed one (not verified), and a certificate the client cannot verify is a
one-line error. On loopback without ``required`` no token is needed, and ``explain --from`` gives
what the journal of the same run gives; ``tui --from`` follows the run live. A manager whose
own identity may not create TokenReviews answers 503 in one line and says so in its log.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
from click.testing import CliRunner

from ctrltrace import Context, Manager, Request, Stage
from ctrltrace.cli import ExitCode
from ctrltrace.cli import main as cli_main
from ctrltrace.envtest import ControlPlane
from ctrltrace.envtest.controlplane import Identity
from ctrltrace.envtest.pytest_plugin import MintIdentity
from ctrltrace.envtest.servers import free_port
from ctrltrace.evidence import explain_from
from ctrltrace.evidence.endpoint import EndpointEvidence
from ctrltrace.journal import Journal, JournalWriter
from ctrltrace.pki import CertificateAuthority, fingerprint
from ctrltrace.records import Record
from ctrltrace.tui.app import TraceApp
from ctrltrace.tui.feed import EvidenceFeed
from ctrltrace.tui.table import LiveTable

from ..unit.test_debugserver import INSECURE, ServedInThread, fetch
from ..unit.test_tui import (  # noqa: F401  # utc: an autouse fixture, used by being imported
    app_on,
    assert_snapshot,
    run,
    screen_text,
    settled,
    utc,
)
from . import test_tui_real as tui_real
from .conftest import Running, start, stop
from .test_run_command import NOOP_APP

ManagerFactory = Callable[..., Manager]
recorded_run, fixed_journal = tui_real.recorded_run, tui_real.fixed_journal  # the fixtures
READER_RULES = [{"nonResourceURLs": ["/debug/ctrltrace/*"], "verbs": ["get"]}]


def _reader_token(mint_identity: MintIdentity) -> str:
    """A service account's token, bound to the ClusterRole that reads the debug endpoint."""
    return _token(mint_identity(READER_RULES, service_account=True))


def _token(identity: Identity) -> str:
    token: str = json.loads(identity.kubeconfig.read_text())["users"][0]["user"]["token"]
    return token


def _get(url: str, token: str | None = None) -> tuple[int, Any]:
    status, body = fetch(url, token)
    return status, json.loads(body)


async def _noop(ctx: Context, request: Request) -> None:
    return None


async def _reconciled_configmap(
    plane: ControlPlane, manager: Manager, namespace: str, name: str
) -> Running:
    manager.controller().named("configmaps").for_("v1", "ConfigMap").complete(_noop)
    running = await start(manager)
    await running.until(lambda: bool(running.records.where(Stage.CONTROLLER, "started")))
    plane.request(
        "POST", f"/api/v1/namespaces/{namespace}/configmaps", {"metadata": {"name": name}}
    )
    await running.until(
        lambda: any(
            r.request == f"{namespace}/{name}" for r in running.records.where(Stage.RECONCILE)
        )
    )
    return running


def test_required_auth_lets_the_reader_role_in_and_no_one_else(
    control_plane: ControlPlane,
    kube_namespace: str,
    manager_factory: ManagerFactory,
    mint_identity: MintIdentity,
) -> None:
    reader = _reader_token(mint_identity)
    stranger = _token(
        mint_identity(
            [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}],
            service_account=True,
        )
    )

    async def scenario() -> None:
        manager = manager_factory(namespaces=[kube_namespace], debug_auth="required")
        running = await _reconciled_configmap(control_plane, manager, kube_namespace, "web")
        try:
            server = manager.debug_server
            assert server is not None and server.authenticates
            base = f"https://127.0.0.1:{server.port}/debug/ctrltrace"
            explain = f"{base}/explain?namespace={kube_namespace}&name=web"
            status, answer = await asyncio.to_thread(_get, explain, reader)
            assert status == 200, answer
            assert answer["verdict"]["code"] == "reconciled"
            assert answer["object"]["key"] == f"{kube_namespace}/web"
            status, answer = await asyncio.to_thread(_get, f"{base}/state", reader)
            assert status == 200
            assert answer["controllers"][0]["name"] == "configmaps"
            assert answer["watches"][0] == {
                "kind": "ConfigMap",
                "synced": True,
                "error": "",
                "namespaces": [kube_namespace],
                "label_selector": "",
            }

            status, answer = await asyncio.to_thread(_get, explain, stranger)
            assert status == 403
            assert answer["error"].startswith("system:serviceaccount:default:restricted-")
            assert "lacks get on /debug/ctrltrace/explain" in answer["error"]
            status, answer = await asyncio.to_thread(_get, explain)
            assert status == 401 and "a bearer token is required" in answer["error"]
            status, answer = await asyncio.to_thread(_get, explain, "not-a-token")
            assert status == 401
            assert answer["error"].startswith("token rejected by the API server (TokenReview)")

            # The CLI, through the same endpoint and its self-signed certificate: the answer,
            # or the refusal with exit 4; unverified only when asked.
            cli = CliRunner()
            url = f"https://127.0.0.1:{server.port}"
            target = f"{kube_namespace}/web"
            explain_cli = ["explain", target, "--from", url]
            result = await asyncio.to_thread(
                cli.invoke, cli_main, [*explain_cli, INSECURE, "--token", reader]
            )
            assert result.exit_code == 0, result.output
            assert "reconciled" in result.output
            result = await asyncio.to_thread(
                cli.invoke, cli_main, [*explain_cli, INSECURE, "--token", stranger]
            )
            assert result.exit_code == ExitCode.ENVIRONMENT
            assert result.output.count("\n") == 1 and "(403)" in result.output
            result = await asyncio.to_thread(
                cli.invoke, cli_main, [*explain_cli, "--token", reader]
            )
            assert result.exit_code == ExitCode.UNREACHABLE
            assert result.output.count("\n") == 1
            assert "CERTIFICATE_VERIFY_FAILED" in result.output
            assert result.output.endswith(
                "; pass --certificate-authority FILE (or --insecure-skip-tls-verify)\n"
            )
        finally:
            await stop(running)

    asyncio.run(scenario())


def test_the_certificate_given_in_debug_cert_dir_is_served_and_verified_with_its_ca(
    control_plane: ControlPlane,
    kube_namespace: str,
    manager_factory: ManagerFactory,
    mint_identity: MintIdentity,
    tmp_path: Path,
) -> None:
    reader = _reader_token(mint_identity)
    authority = CertificateAuthority("the cluster's cert-manager")
    pair = authority.serving(("127.0.0.1", "localhost"))
    certs = tmp_path / "debug-tls"  # a Secret of type kubernetes.io/tls, as mounted
    certs.mkdir()
    (certs / "tls.crt").write_bytes(pair.cert_pem)
    (certs / "tls.key").write_bytes(pair.key_pem)
    (tmp_path / "ca.crt").write_bytes(authority.cert_pem)

    async def scenario() -> None:
        manager = manager_factory(
            namespaces=[kube_namespace], debug_auth="required", debug_cert_dir=str(certs)
        )
        with structlog.testing.capture_logs() as logs:
            running = await _reconciled_configmap(control_plane, manager, kube_namespace, "web")
        try:
            assert manager.debug_server is not None
            url = f"https://127.0.0.1:{manager.debug_server.port}"
            explain_cli = ["explain", f"{kube_namespace}/web", "--from", url, "--token", reader]
            cli = CliRunner()
            result = await asyncio.to_thread(
                cli.invoke,
                cli_main,
                [*explain_cli, "--certificate-authority", str(tmp_path / "ca.crt")],
            )
            assert result.exit_code == 0, result.output
            assert "reconciled" in result.output
            result = await asyncio.to_thread(cli.invoke, cli_main, explain_cli)
            assert result.exit_code == ExitCode.UNREACHABLE
            assert result.output.count("\n") == 1 and "--certificate-authority" in result.output
        finally:
            await stop(running)
        (served,) = [log for log in logs if log["event"] == "Serving debug endpoint"]
        assert served["certificate"] == str(certs / "tls.crt")
        assert served["sha256_fingerprint"] == fingerprint(pair.cert_pem)

    asyncio.run(scenario())


def test_loopback_needs_no_token_and_explain_from_equals_the_journal_and_tui_follows(
    control_plane: ControlPlane,
    kube_namespace: str,
    manager_factory: ManagerFactory,
    tmp_path: Path,
) -> None:
    path = tmp_path / "journal.sqlite"

    async def scenario() -> None:
        manager = manager_factory(namespaces=[kube_namespace])  # debug_auth auto, on loopback
        with JournalWriter(path, flush_interval_s=0.05) as writer:
            manager.add_sink(writer)
            running = await _reconciled_configmap(control_plane, manager, kube_namespace, "web")
            try:
                server = manager.debug_server
                assert server is not None and not server.authenticates
                url = f"http://127.0.0.1:{server.port}"
                await running.until(lambda: manager.controllers[0].queue.processing_count == 0)
                writer.flush()
                now = time.time()
                explained = functools.partial(
                    explain_from, namespace=kube_namespace, name="web", now=now
                )
                remote = await asyncio.to_thread(lambda: explained(EndpointEvidence(url)).to_json())
                with Journal(path) as journal:
                    local = explained(journal).to_json()
                assert remote == local
                assert remote["verdict"]["code"] == "reconciled"

                cli = CliRunner()
                by_url, by_journal = [
                    await asyncio.to_thread(
                        cli.invoke, cli_main, ["explain", f"{kube_namespace}/web", *where, "--json"]
                    )
                    for where in (["--from", url], ["--journal", str(path)])
                ]
                assert by_url.exit_code == by_journal.exit_code == 0
                assert {**json.loads(by_url.output), "now": 0} == {
                    **json.loads(by_journal.output),
                    "now": 0,
                }

                app = TraceApp(
                    EvidenceFeed(
                        functools.partial(EndpointEvidence, url),
                        label=f"debug endpoint {url}",
                        poll_s=0.05,
                    )
                )
                async with app.run_test(size=(110, 30)) as pilot:
                    await settled(pilot, 1)
                    assert f"{kube_namespace}/web" in screen_text(app)
                    control_plane.request(
                        "POST",
                        f"/api/v1/namespaces/{kube_namespace}/configmaps",
                        {"metadata": {"name": "late"}},
                    )
                    deadline = time.monotonic() + 20
                    while f"{kube_namespace}/late" not in screen_text(app):
                        assert time.monotonic() < deadline, screen_text(app)
                        await pilot.pause(0.05)
                    assert "● live" in screen_text(app)
                    assert f"debug endpoint {url}" in screen_text(app)
            finally:
                await stop(running)

    run(scenario)


def test_a_manager_that_may_not_review_tokens_answers_503_and_says_why(
    control_plane: ControlPlane,
    kube_namespace: str,
    manager_factory: ManagerFactory,
    mint_identity: MintIdentity,
) -> None:
    reader = _reader_token(mint_identity)
    # May watch its ConfigMaps, and nothing else: no tokenreviews, no subjectaccessreviews.
    own = mint_identity(
        [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]}],
        namespace=kube_namespace,
    )

    async def scenario() -> None:
        manager = manager_factory(
            namespaces=[kube_namespace], debug_auth="required", kubeconfig=str(own.kubeconfig)
        )
        with structlog.testing.capture_logs() as logs:
            running = await _reconciled_configmap(control_plane, manager, kube_namespace, "web")
            try:
                assert manager.debug_server is not None
                url = f"https://127.0.0.1:{manager.debug_server.port}/debug/ctrltrace/state"
                started = time.monotonic()
                status, answer = await asyncio.to_thread(_get, url, reader)
                assert time.monotonic() - started < 10  # an answer, not a hang
                assert status == 503
                assert answer["error"] == (
                    "cannot check the token: the manager's identity lacks create on "
                    "tokenreviews.authentication.k8s.io; grant it (ctrltrace rbac prints the rule)"
                )
            finally:
                await stop(running)
        (warning,) = [log for log in logs if log["event"] == "Debug endpoint cannot check tokens"]
        assert warning["log_level"] == "warning"
        assert "tokenreviews.authentication.k8s.io" in warning["problem"]

    asyncio.run(scenario())


def test_tui_from_replays_a_recorded_real_run_as_its_journal_does(
    fixed_journal: tuple[Path, list[Record]],
) -> None:
    path, records = fixed_journal
    clock = records[-1].time + 3600

    async def screens(app: TraceApp, snapshot: str | None = None) -> list[str]:
        shown = []
        async with app.run_test(size=tui_real.SIZE) as pilot:
            await settled(pilot, len(records))
            shown.append(screen_text(app))
            await pilot.press("2")
            await pilot.pause()
            shown.append(screen_text(app))
            await pilot.press("1")
            events = app.query_one("#events", LiveTable)
            row = next(r for r in app.live.events.values() if r.name == "b")
            events.move_to(list(events.keys).index(row.key))
            await pilot.press("enter")
            deadline = time.monotonic() + 10
            while "fix:" not in screen_text(app):
                assert time.monotonic() < deadline
                await pilot.pause(0.05)
            shown.append(screen_text(app))
            if snapshot is not None:
                assert_snapshot(app, snapshot)
        return shown

    with ServedInThread(records) as url:
        feed = EvidenceFeed(
            functools.partial(EndpointEvidence, url), label=f"debug endpoint {url}", poll_s=0.02
        )
        from_endpoint = asyncio.run(screens(app_on(path, clock, feed), "real-object"))
    from_journal = asyncio.run(screens(app_on(path, clock)))
    label = f"debug endpoint {url}"
    for remote, local in zip(from_endpoint, from_journal, strict=True):
        # The same screens but for the source's name on the status line (and its padding).
        named = remote.replace(label, f"journal {path}")
        assert [line.rstrip() for line in named.splitlines()] == [
            line.rstrip() for line in local.splitlines()
        ]
    assert "✓ reconciled  Reconcile of demo/b in widget succeeded after 2 runs" in from_endpoint[2]


def test_ctrltrace_run_serves_the_journal_it_writes(
    control_plane: ControlPlane, kube_namespace: str, tmp_path: Path
) -> None:
    (tmp_path / "noopapp.py").write_text(NOOP_APP)
    port, journal = free_port(), tmp_path / "journal.sqlite"
    command = [
        sys.executable, "-m", "ctrltrace", "run", "noopapp:mgr",
        "--kubeconfig", str(control_plane.kubeconfig), "--namespace", kube_namespace,
        "--metrics-bind-address", "0", "--health-probe-bind-address", "0",
        "--debug-bind-address", f"127.0.0.1:{port}", "--journal", str(journal),
        "--log-format", "json",
    ]  # fmt: skip
    control_plane.request(
        "POST", f"/api/v1/namespaces/{kube_namespace}/configmaps", {"metadata": {"name": "a"}}
    )
    process = subprocess.Popen(command, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}/debug/ctrltrace"
    try:
        deadline = time.monotonic() + 20
        answer: Any = {}
        while answer.get("verdict", {}).get("code") != "reconciled":
            assert time.monotonic() < deadline, answer
            with contextlib.suppress(urllib.error.URLError, ConnectionError):
                answer = _get(f"{base}/explain?namespace={kube_namespace}&name=a")[1]
            time.sleep(0.1)
        served = EndpointEvidence(f"http://127.0.0.1:{port}").tail(0, 10_000)
        with Journal(journal) as read:
            written = read.tail(0, 10_000)
        assert served == written[: len(served)]  # the journal's records, with its cursors
        process.send_signal(signal.SIGINT)
        assert process.wait(15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.stderr is not None
    serving = [json.loads(line) for line in process.stderr if "Serving debug endpoint" in line]
    assert [(line["address"], line["evidence"]) for line in serving] == [
        (f"http://127.0.0.1:{port}", f"journal {journal}")
    ]
