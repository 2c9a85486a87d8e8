"""Doctor's checks that need no cluster, and how a report reads as text and as JSON."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from ctrltrace import BuildError, Context, LeaseTiming, Manager, Request, leaderelection, predicates
from ctrltrace.doctor import (
    LEADER,
    STARTUP,
    TRAPS,
    Check,
    Report,
    Status,
    leader_election_checks,
    startup_checks,
    trap_checks,
)


async def _noop(ctx: Context, request: Request) -> None:
    return None


def _statuses(checks: list[Check]) -> list[tuple[Status, str]]:
    return [(check.status, check.title) for check in checks]


def test_builder_problems_fail_with_the_messages_start_up_stops_with() -> None:
    mgr = Manager()
    mgr.controller().named("orphan").owns("v1", "ConfigMap").complete(_noop)
    mgr.controller().named("idle").complete(_noop)
    checks = startup_checks(mgr)
    assert [check.status for check in checks] == [Status.FAIL] * 2
    assert [check.section for check in checks] == [STARTUP] * 2
    titles = [check.title for check in checks]
    assert titles == mgr.problems()
    with pytest.raises(BuildError) as raised:
        asyncio.run(mgr.start())
    assert str(raised.value) == "; ".join(titles)


def test_a_good_build_passes_start_up_validation() -> None:
    mgr = Manager()
    mgr.controller().for_("v1", "ConfigMap").complete(_noop)
    mgr.controller().for_("v1", "Secret").complete(_noop)
    assert _statuses(startup_checks(mgr)) == [(Status.OK, "2 controllers pass start-up validation")]


def test_a_manager_without_controllers_is_a_warning() -> None:
    assert _statuses(startup_checks(Manager())) == [(Status.WARN, "the manager has no controllers")]


def test_bad_lease_timing_is_a_start_up_failure_with_its_own_fix() -> None:
    mgr = Manager(
        leader_election=True,
        leader_election_id="ok.example.com",
        lease_timing=LeaseTiming(lease_duration=5, renew_deadline=10),
    )
    mgr.controller().for_("v1", "ConfigMap").complete(_noop)
    [check] = startup_checks(mgr)
    assert check.title == "lease duration must be greater than the renew deadline"
    assert check.fix == "change lease_timing on the Manager"


def test_an_invalid_leader_election_id_fails_under_leader_election_only() -> None:
    mgr = Manager(leader_election=True, leader_election_id="Widgets_ID")
    mgr.controller().for_("v1", "ConfigMap").complete(_noop)
    assert startup_checks(mgr)[0].status is Status.OK  # not reported twice
    [id_check, _] = leader_election_checks(mgr, in_cluster=False)
    assert id_check.status is Status.FAIL and id_check.section == LEADER
    assert id_check.title == mgr.problems()[0]
    assert "is not a valid DNS subdomain" in id_check.title


def test_a_valid_id_and_a_set_namespace_pass() -> None:
    mgr = Manager(
        leader_election=True,
        leader_election_id="widgets.example.com",
        leader_election_namespace="ops",
    )
    assert _statuses(leader_election_checks(mgr, in_cluster=False)) == [
        (Status.OK, "the leader election id 'widgets.example.com' is a valid DNS subdomain"),
        (Status.OK, "the Lease's namespace is set: ops"),
    ]


def test_an_unset_lease_namespace_fails_outside_a_cluster_and_warns_inside_one() -> None:
    mgr = Manager(leader_election=True, leader_election_id="widgets.example.com")
    outside = leader_election_checks(mgr, in_cluster=False)[1]
    inside = leader_election_checks(mgr, in_cluster=True)[1]
    assert outside.status is Status.FAIL and inside.status is Status.WARN
    assert outside.title == "the leader election namespace is not set"
    assert "--leader-election-namespace" in outside.fix


def test_an_unset_lease_namespace_is_fine_in_a_pod_that_knows_its_namespace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pod_file = tmp_path / "namespace"
    pod_file.write_text("widgets-system")
    monkeypatch.setattr(leaderelection, "POD_NAMESPACE_FILE", pod_file)
    mgr = Manager(leader_election=True, leader_election_id="widgets.example.com")
    assert _statuses(leader_election_checks(mgr, in_cluster=True))[1] == (
        Status.OK,
        "the Lease goes to the pod's namespace: widgets-system",
    )


def test_leader_election_off_needs_no_lease() -> None:
    assert _statuses(leader_election_checks(Manager(), in_cluster=False)) == [
        (Status.OK, "leader election is off: no Lease is needed")
    ]


def _traps(build: Any, **options: Any) -> list[tuple[Status, str]]:
    return _statuses(trap_checks(_built(build, **options)))


def _built(build: Any, **options: Any) -> Manager:
    mgr = Manager(**options)
    build(mgr.controller()).complete(_noop)
    return mgr


NO_TRAPS = [(Status.OK, "none of the known traps applies")]


def test_owning_pods_of_a_deployment_warns_that_replica_sets_control_them() -> None:
    found = _traps(lambda b: b.for_("apps/v1", "Deployment").owns("v1", "Pod"))
    assert found == [
        (
            Status.WARN,
            "controller deployment owns Pod, but Pods are usually controlled by the built-in "
            "ReplicaSet.apps, StatefulSet.apps, DaemonSet.apps or Job.batch, not by "
            "Deployment.apps",
        )
    ]


def _cronjobs(builder: Any) -> Any:
    """kubebuilder's CronJob tutorial: a CRD named like the built-in kind, owning Jobs."""
    return builder.for_("batch.tutorial.kubebuilder.io/v1", "CronJob").owns("batch/v1", "Job")


def test_a_crd_named_like_the_built_in_owner_is_told_apart_by_its_group() -> None:
    [check] = trap_checks(_built(_cronjobs))
    assert check.title == (
        "controller cronjob owns Job.batch, but Jobs are usually controlled by the built-in "
        "CronJob.batch, not by CronJob.batch.tutorial.kubebuilder.io"
    )
    assert check.code == "owns-intermediate-owner"
    assert "--accept-trap owns-intermediate-owner" in check.fix


def test_a_controller_that_declares_it_creates_what_it_owns_is_not_warned() -> None:
    mgr = _built(lambda b: _cronjobs(b).writes("batch", "jobs", ["create", "delete"]))
    assert _statuses(trap_checks(mgr)) == NO_TRAPS
    reading = _built(lambda b: _cronjobs(b).writes("batch", "jobs", ["delete"]))
    assert [check.status for check in trap_checks(reading)] == [Status.WARN]


def test_an_accepted_trap_is_listed_as_accepted_not_warned() -> None:
    mgr = _built(_cronjobs)
    [check] = trap_checks(mgr, accepted=["owns-intermediate-owner"])
    assert check.status is Status.OK
    assert check.title.startswith("accepted (owns-intermediate-owner): controller cronjob owns")
    [other] = trap_checks(mgr, accepted=["generation-changed"])
    assert other.status is Status.WARN


def test_owning_the_direct_child_is_no_trap() -> None:
    assert _traps(lambda b: b.for_("apps/v1", "ReplicaSet").owns("v1", "Pod")) == NO_TRAPS
    assert _traps(lambda b: b.for_("apps/v1", "Deployment").owns("apps/v1", "ReplicaSet")) == (
        NO_TRAPS
    )


def test_generation_changed_on_the_for_kind_warns_about_status_and_deletion() -> None:
    found = _traps(lambda b: b.for_("example.com/v1", "Widget", predicates.GenerationChanged()))
    assert found == [
        (
            Status.WARN,
            "GenerationChanged on for_(Widget.example.com) in controller widget drops "
            "status-only updates and the update that sets deletionTimestamp",
        )
    ]


def test_generation_changed_on_an_owned_kind_warns_about_its_status() -> None:
    found = _traps(
        lambda b: b.for_("example.com/v1", "Widget").owns(
            "apps/v1", "Deployment", predicates.GenerationChanged()
        )
    )
    assert found == [
        (
            Status.WARN,
            "GenerationChanged on owns(Deployment.apps) in controller widget drops status "
            "changes of the watched objects",
        )
    ]


def test_generation_changed_as_an_event_filter_on_a_kind_without_generations_drops_all() -> None:
    found = _traps(
        lambda b: b.for_("v1", "ConfigMap").with_event_filter(
            predicates.LabelChanged() & predicates.GenerationChanged()
        )
    )
    assert found == [
        (
            Status.WARN,
            "GenerationChanged on for_(ConfigMap) in controller configmap drops every update: "
            "ConfigMap has no metadata.generation",
        )
    ]


def test_generation_changed_ored_with_another_predicate_is_a_deliberate_choice() -> None:
    either = predicates.GenerationChanged() | predicates.LabelChanged()
    assert _traps(lambda b: b.for_("example.com/v1", "Widget", either)) == NO_TRAPS


def test_a_namespace_filter_without_the_lease_namespace_warns() -> None:
    def build(b: Any) -> Any:
        return b.for_("v1", "ConfigMap")

    lease = {"leader_election": True, "leader_election_id": "x.example.com"}
    assert _traps(build, namespaces=["a"], leader_election_namespace="ops", **lease) == [
        (Status.WARN, "the Lease's namespace ops is not one the manager caches (a)")
    ]
    assert _traps(build, namespaces=["a"], **lease)[0][1].startswith(
        "the Lease's namespace default is not"
    )
    assert _traps(build, namespaces=["a", "ops"], leader_election_namespace="ops", **lease) == (
        NO_TRAPS
    )
    assert _traps(build, leader_election_namespace="ops", **lease) == NO_TRAPS


def _report(*statuses: Status) -> Report:
    checks = tuple(
        Check(status, TRAPS, f"check {index} " + "word " * 30, "detail " * 30, "fix " * 30)
        for index, status in enumerate(statuses)
    )
    return Report("app:mgr", "https://127.0.0.1:6443", "v1.36.3", "alice", checks)


@pytest.mark.parametrize(
    ("statuses", "worst"),
    [
        ((Status.OK, Status.OK), Status.OK),
        ((Status.OK, Status.WARN), Status.WARN),
        ((Status.FAIL, Status.WARN, Status.OK), Status.FAIL),
        ((), Status.OK),
    ],
)
def test_the_worst_status_decides(statuses: tuple[Status, ...], worst: Status) -> None:
    assert _report(*statuses).worst is worst


def test_the_checklist_reads_without_colour_and_fits_100_columns() -> None:
    text = _report(Status.OK, Status.WARN, Status.FAIL).render()
    lines = text.splitlines()
    assert len(lines) >= 3 and all(len(line) <= 100 for line in lines)
    assert "\x1b" not in text
    assert [line[:4] for line in lines if line.startswith("  ") and line[2] in "✓!✗"] == [
        "  ✓ ",
        "  ! ",
        "  ✗ ",
    ]
    assert sum(line.startswith("    fix: ") for line in lines) == 3
    assert lines[-1] == "1 failed, 1 warning, 1 ok"
    assert lines[:2] == [
        "ctrltrace doctor app:mgr",
        "cluster https://127.0.0.1:6443 (v1.36.3), as alice",
    ]


def test_the_json_escapes_what_a_terminal_would_obey() -> None:
    hostile = "\x9b2J\u202egnp.exe\x1b]0;owned\x07"
    check = Check(Status.FAIL, TRAPS, "a check", f"the API server said: {hostile}", "fix it")
    text = Report("app:mgr", "https://127.0.0.1:6443", "v1.36.3", "alice", (check,)).json_text()
    assert text.isascii()
    assert json.loads(text)["checks"][0]["detail"].endswith(hostile)


def test_the_json_has_every_check_and_the_overall_status() -> None:
    document = json.loads(json.dumps(_report(Status.OK, Status.WARN).as_json()))
    assert document["status"] == "warn"
    assert document["summary"] == {"ok": 1, "warn": 1, "fail": 0}
    assert document["identity"] == "alice"
    assert document["cluster"] == {"server": "https://127.0.0.1:6443", "version": "v1.36.3"}
    assert [set(check) for check in document["checks"]] == [
        {"status", "section", "title", "detail", "fix", "code"}
    ] * 2
