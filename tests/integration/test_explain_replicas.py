"""`explain --traces` across two replicas with identities of their own, one of which may not
watch ConfigMaps: a blind standby is a warning beside the leader's answer; a blind leader's
watch is the verdict even when the standby saw the change (README, "Across replicas")."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable
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
    (tmp_path / "tracedapp.py").write_text(APP)
    sighted = mint_identity([*_LEASE_AND_EVENTS, _CONFIGMAPS], namespace=kube_namespace)
    blind = mint_identity(_LEASE_AND_EVENTS, namespace=kube_namespace)
    service = f"ctrltrace-blind-standby-{kube_namespace}"
    traces = f"{jaeger.query_url}?service={service}"
    request = f"{kube_namespace}/subject"
    control_plane.request(
        "POST", f"/api/v1/namespaces/{kube_namespace}/configmaps", {"metadata": {"name": "subject"}}
    )
    a_journal, b_journal = tmp_path / "replica-a.sqlite", tmp_path / "replica-b.sqlite"
    args = (tmp_path, control_plane, kube_namespace, jaeger, service)
    with _replica("replica-a", *args, sighted.kubeconfig) as leader:
        _until(
            _journaled(leader, a_journal, Stage.LEASE, outcome=LeaseOutcome.ACQUIRED),
            "replica-a to lead",
        )
        _until(_reconciled(a_journal, request), "replica-a to reconcile the subject")
        with _replica("replica-b", *args, blind.kubeconfig) as standby:
            _until(
                _journaled(standby, b_journal, Stage.LEASE, outcome=LeaseOutcome.STANDBY),
                "replica-b to stand by",
            )
            _until(
                _journaled(standby, b_journal, Stage.WATCH, outcome=WatchOutcome.FORBIDDEN),
                "replica-b's list of ConfigMaps to be refused",
            )
            _patch(control_plane, kube_namespace, "subject", {"changed": "with a blind standby"})
            _until(_reconciled(a_journal, request, 2), "replica-a to reconcile the change")
            _until(_spans_of(jaeger, service, "replica-a", request, count=2), "replica-a's spans")
            _until(
                _spans_of(
                    jaeger,
                    service,
                    "replica-b",
                    name="watch ConfigMap",
                    outcome=WatchOutcome.FORBIDDEN,
                ),
                "replica-b's refused watch in Jaeger",
            )
            _until(
                _spans_of(jaeger, service, "replica-b", name="lease standby"),
                "replica-b's standby lease record in Jaeger",
            )

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
    (tmp_path / "tracedapp.py").write_text(APP)
    blind = mint_identity(_LEASE_AND_EVENTS, namespace=kube_namespace)
    sighted = mint_identity([*_LEASE_AND_EVENTS, _CONFIGMAPS], namespace=kube_namespace)
    service = f"ctrltrace-blind-leader-{kube_namespace}"
    request = f"{kube_namespace}/subject"
    control_plane.request(
        "POST", f"/api/v1/namespaces/{kube_namespace}/configmaps", {"metadata": {"name": "subject"}}
    )
    a_journal, b_journal = tmp_path / "replica-a.sqlite", tmp_path / "replica-b.sqlite"
    args = (tmp_path, control_plane, kube_namespace, jaeger, service)
    with _replica("replica-a", *args, blind.kubeconfig) as leader:
        _until(
            _journaled(leader, a_journal, Stage.LEASE, outcome=LeaseOutcome.ACQUIRED),
            "replica-a to lead",
        )
        _until(
            _journaled(leader, a_journal, Stage.WATCH, outcome=WatchOutcome.FORBIDDEN),
            "replica-a's list of ConfigMaps to be refused",
        )
        with _replica("replica-b", *args, sighted.kubeconfig) as standby:
            _until(
                _journaled(standby, b_journal, Stage.LEASE, outcome=LeaseOutcome.STANDBY),
                "replica-b to stand by",
            )
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
            _until(
                _spans_of(jaeger, service, "replica-b", request, name="dispatch", count=2),
                "replica-b's dispatches in Jaeger",
            )
            _until(
                _spans_of(
                    jaeger,
                    service,
                    "replica-a",
                    name="watch ConfigMap",
                    outcome=WatchOutcome.FORBIDDEN,
                ),
                "replica-a's refused watch in Jaeger",
            )
            _until(
                _spans_of(jaeger, service, "replica-a", name="lease acquired"),
                "replica-a's lease in Jaeger",
            )

            code, answer = _explain(
                request, "--traces", f"{jaeger.query_url}?service={service}", "--since", "10m"
            )
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
