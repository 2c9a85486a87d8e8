"""`explain --traces` across two replicas with identities of their own, one of which may not
watch ConfigMaps: a blind standby is a warning beside the leader's answer; a blind leader's
watch is the verdict even when the standby saw the change (README, "Across replicas")."""

from __future__ import annotations

import contextlib
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ctrltrace.envtest import ControlPlane, PolicyRule
from ctrltrace.envtest.observability import Jaeger
from ctrltrace.envtest.pytest_plugin import MintIdentity
from ctrltrace.records import Stage
from ctrltrace.vocabulary import Attr, EventOutcome, LeaseOutcome, WatchOutcome

from .test_explain_from_traces import (
    APP,
    _explain,
    _reconciled,
    _records,
    _replica,
    _spans_of,
    _until,
)

# What `ctrltrace rbac tracedapp:mgr` grants, but the ConfigMaps: the Lease and Events.
_LEASE_AND_EVENTS: list[PolicyRule] = [
    {
        "apiGroups": ["coordination.k8s.io"],
        "resources": ["leases"],
        "verbs": ["get", "create", "update"],
    },
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
]
_CONFIGMAPS: PolicyRule = {
    "apiGroups": [""],
    "resources": ["configmaps"],
    "verbs": ["get", "list", "watch"],
}


def _journaled(
    replica: subprocess.Popen[str],
    journal: Path,
    stage: Stage,
    *,
    outcome: str | None = None,
    request: str | None = None,
    count: int = 1,
) -> Callable[[], bool]:
    """Whether ``replica``'s journal holds ``count`` records of ``stage`` or more (with
    ``outcome``, about ``request``, when given); fails at once when the replica has exited."""

    def there() -> bool:
        if replica.poll() is not None:
            log = journal.with_suffix(".log").read_text()
            raise AssertionError(f"{journal.stem} exited {replica.returncode}: {log[-2000:]}")
        found = [
            r
            for r in _records(journal)
            if r.stage is stage and outcome in (None, r.outcome) and request in (None, r.request)
        ]
        return len(found) >= count

    return there


def _patch(plane: ControlPlane, namespace: str, name: str, data: dict[str, str]) -> None:
    plane.request(
        "PATCH",
        f"/api/v1/namespaces/{namespace}/configmaps/{name}",
        {"data": data},
        content_type="application/merge-patch+json",
    )


class _Pair:
    """Two replicas' common ground: the app, the subject ConfigMap, the journals, the service."""

    def __init__(self, plane: ControlPlane, namespace: str, jaeger: Jaeger, tmp_path: Path):
        (tmp_path / "tracedapp.py").write_text(APP)
        plane.request(
            "POST", f"/api/v1/namespaces/{namespace}/configmaps", {"metadata": {"name": "subject"}}
        )
        self.jaeger = jaeger
        self.service = f"ctrltrace-replicas-{namespace}"
        self.traces = f"{jaeger.query_url}?service={self.service}"
        self.request = f"{namespace}/subject"
        self.journals = tmp_path / "replica-a.sqlite", tmp_path / "replica-b.sqlite"
        self.args = (tmp_path, plane, namespace, jaeger, self.service)

    @contextlib.contextmanager
    def running(self, name: str, kubeconfig: Path, lease: str) -> Iterator[subprocess.Popen[str]]:
        """Replica ``name`` (replica-a or replica-b) run as ``kubeconfig``, once its lease
        record says ``lease``."""
        journal = self.journals[name == "replica-b"]
        with _replica(name, *self.args, kubeconfig) as replica:
            _until(_journaled(replica, journal, Stage.LEASE, outcome=lease), f"{name}: {lease}")
            yield replica

    def wait_for_span(self, replica: str, what: str, **span: Any) -> None:
        _until(_spans_of(self.jaeger, self.service, replica, **span), f"{what} in Jaeger")

    def wait_for_refused_watch(self, replica: str) -> None:
        self.wait_for_span(
            replica,
            f"{replica}'s refused watch",
            name="watch ConfigMap",
            outcome=WatchOutcome.FORBIDDEN,
        )


def _stopped(replica: subprocess.Popen[str]) -> int:
    replica.send_signal(signal.SIGINT)
    return replica.wait(timeout=30)


def test_a_standby_that_may_not_watch_the_kind_is_a_warning_beside_the_leaders_answer(
    control_plane: ControlPlane,
    kube_namespace: str,
    jaeger: Jaeger,
    mint_identity: MintIdentity,
    tmp_path: Path,
) -> None:
    sighted = mint_identity([*_LEASE_AND_EVENTS, _CONFIGMAPS], namespace=kube_namespace)
    blind = mint_identity(_LEASE_AND_EVENTS, namespace=kube_namespace)
    pair = _Pair(control_plane, kube_namespace, jaeger, tmp_path)
    request, traces, (a_journal, b_journal) = pair.request, pair.traces, pair.journals
    with pair.running("replica-a", sighted.kubeconfig, LeaseOutcome.ACQUIRED) as leader:
        _until(_reconciled(a_journal, request), "replica-a to reconcile the subject")
        with pair.running("replica-b", blind.kubeconfig, LeaseOutcome.STANDBY) as standby:
            _until(
                _journaled(standby, b_journal, Stage.WATCH, outcome=WatchOutcome.FORBIDDEN),
                "replica-b's list of ConfigMaps to be refused",
            )
            _patch(control_plane, kube_namespace, "subject", {"changed": "with a blind standby"})
            _until(_reconciled(a_journal, request, 2), "replica-a to reconcile the change")
            pair.wait_for_span("replica-a", "replica-a's spans", request=request, count=2)
            pair.wait_for_refused_watch("replica-b")
            pair.wait_for_span("replica-b", "replica-b's standby", name="lease standby")

            code, answer = _explain(request, "--traces", traces, "--since", "10m")
            # With no event to explain, the standby's blindness is what explain adds.
            unseen_code, unseen = _explain(
                f"{kube_namespace}/never-created", "--kind", "ConfigMap", "--traces", traces,
                "--since", "10m",
            )  # fmt: skip
            assert leader.poll() is None and standby.poll() is None
            assert _stopped(standby) == 0
        assert _stopped(leader) == 0

    verdict = answer["verdict"]
    assert (code, verdict["code"]) == (0, "reconciled"), verdict
    # The leader saw and reconciled every change; the standby saw none of them.
    events = [
        (e["outcome"], e["details"]["replica"]) for e in answer["timeline"] if e["stage"] == "event"
    ]
    assert events == [("ADDED", "replica-a"), ("MODIFIED", "replica-a")], answer["timeline"]
    # Reconciled, and still the standby would be blind to the object once it led.
    assert [warning["code"] for warning in verdict["warnings"]] == ["standby_blind"], verdict
    assert verdict["warnings"][0]["message"].startswith(
        "standby replica-b cannot see this object's kind"
    )

    verdict = unseen["verdict"]
    assert (unseen_code, verdict["code"]) == (3, "no_events"), verdict
    assert "ConfigMap is watched and its cache synced" in verdict["message"]
    assert (
        "(replica-a holds the leader lease; other replicas: replica-b: watch_forbidden)"
        in verdict["message"]
    ), verdict["message"]
    assert verdict["details"]["replica"] == "replica-a"
    assert verdict["details"]["other_replicas"] == [
        {"replica": "replica-b", "code": "watch_forbidden"}
    ]
    (warning,) = verdict["warnings"]
    assert warning["code"] == "standby_blind"
    assert warning["message"].startswith("standby replica-b cannot see this object's kind")
    assert blind.name in warning["message"] and "configmaps" in warning["message"]
    assert "kubectl create" in warning["fix"] and blind.name in warning["fix"]


def test_a_leader_that_may_not_watch_the_kind_answers_for_a_change_only_the_standby_saw(
    control_plane: ControlPlane,
    kube_namespace: str,
    jaeger: Jaeger,
    mint_identity: MintIdentity,
    tmp_path: Path,
) -> None:
    blind = mint_identity(_LEASE_AND_EVENTS, namespace=kube_namespace)
    sighted = mint_identity([*_LEASE_AND_EVENTS, _CONFIGMAPS], namespace=kube_namespace)
    pair = _Pair(control_plane, kube_namespace, jaeger, tmp_path)
    request, (a_journal, b_journal) = pair.request, pair.journals
    with pair.running("replica-a", blind.kubeconfig, LeaseOutcome.ACQUIRED) as leader:
        _until(
            _journaled(leader, a_journal, Stage.WATCH, outcome=WatchOutcome.FORBIDDEN),
            "replica-a's list of ConfigMaps to be refused",
        )
        with pair.running("replica-b", sighted.kubeconfig, LeaseOutcome.STANDBY) as standby:
            # Its informer runs while it stands by: the first list queues the subject.
            _until(
                _journaled(standby, b_journal, Stage.DISPATCH, request=request),
                "replica-b to queue the subject",
            )
            _patch(control_plane, kube_namespace, "subject", {"changed": "seen by the standby"})
            _until(
                _journaled(standby, b_journal, Stage.DISPATCH, request=request, count=2),
                "replica-b to queue the change",
            )
            pair.wait_for_span(
                "replica-b", "replica-b's dispatches", request=request, name="dispatch", count=2
            )
            pair.wait_for_refused_watch("replica-a")
            pair.wait_for_span("replica-a", "replica-a's lease", name="lease acquired")

            code, answer = _explain(request, "--traces", pair.traces, "--since", "10m")
            # The leader is still up, waiting for its ConfigMap cache (cache_sync_timeout is
            # 2 minutes), and the standby still stands by: nothing reconciled the change.
            assert leader.poll() is None and standby.poll() is None
            a_records = _records(a_journal)
            assert not [r for r in a_records if r.stage is Stage.RECONCILE_START]
            (acquired,) = [
                r
                for r in a_records
                if r.stage is Stage.LEASE and r.outcome == LeaseOutcome.ACQUIRED
            ]
            leader_identity = acquired.attrs[Attr.IDENTITY]
            *_, modified = [r for r in _records(b_journal) if r.stage is Stage.EVENT]
            assert modified.outcome == EventOutcome.MODIFIED and modified.object is not None
            rv = modified.object.resource_version  # the change the standby alone saw
            assert _stopped(standby) == 0
        assert _stopped(leader) == 0

    verdict: dict[str, Any] = answer["verdict"]
    assert code == 3
    assert verdict["code"] == "watch_forbidden", verdict
    assert verdict["details"]["replica"] == "replica-a"
    message = verdict["message"]
    assert blind.name in message and "configmaps" in message, message
    assert (
        f"(on replica-a, the leader, which so saw no event for {request}; only replica-b, "
        f"standing by, saw MODIFIED ConfigMap {request} rv {rv} gen 0 and queued it, and only "
        "the leader reconciles)"
    ) in message, message
    assert "kubectl create" in verdict["fix"] and blind.name in verdict["fix"], verdict["fix"]
    (standby_details,) = verdict["details"]["standbys"]
    # replica-b queued the change while replica-a (by its lease identity) held the lease.
    assert standby_details == {
        "replica": "replica-b",
        "controller": "configmap",
        "request": request,
        "lease": f"{kube_namespace}/traces.example.com",
        "holder": leader_identity,
        "lease_outcome": "standby",
    }
    # The evidence is the leader's refused watch and the standby's events, nothing reconciled.
    timeline = answer["timeline"]
    watches = [(e["outcome"], e["details"]["replica"]) for e in timeline if e["stage"] == "watch"]
    assert ("forbidden", "replica-a") in watches, timeline
    assert {e["details"]["replica"] for e in timeline if e["stage"] == "event"} == {"replica-b"}
    assert not [e for e in timeline if e["stage"] in ("reconcile_start", "reconcile")]
