from __future__ import annotations

import asyncio

import pytest

from ctrltrace import BuildError, Context, LeaseTiming, Manager, Request, handlers


async def _noop(ctx: Context, request: Request) -> None:
    return None


def test_a_complete_controller_has_no_problems() -> None:
    mgr = Manager()
    mgr.controller().for_("example.com/v1", "Widget").owns("v1", "ConfigMap").complete(_noop)
    assert mgr.problems() == []


def test_name_defaults_to_the_lowercased_for_kind() -> None:
    mgr = Manager()
    spec = mgr.controller().for_("example.com/v1", "Widget").complete(_noop)
    assert spec.name == "widget"


def test_a_controller_without_watches_will_never_be_triggered() -> None:
    mgr = Manager()
    mgr.controller().named("idle").complete(_noop)
    assert mgr.problems() == ["idle: no watches: the controller will never get triggered"]


def test_owns_without_for_is_a_build_error() -> None:
    mgr = Manager()
    mgr.controller().named("orphan").owns("v1", "ConfigMap").complete(_noop)
    assert mgr.problems() == ["orphan: owns() needs for_(): owned objects map to the for_ kind"]


def test_watches_without_a_name_or_for_is_a_build_error() -> None:
    mgr = Manager()
    mgr.controller().watches("v1", "Secret", handlers.map_to(lambda obj: [])).complete(_noop)
    assert mgr.problems() == ["controller has no name: call .named(...) or .for_(...)"]


def test_duplicate_names_are_a_build_error() -> None:
    mgr = Manager()
    mgr.controller().for_("v1", "ConfigMap").complete(_noop)
    mgr.controller().for_("v1", "ConfigMap").complete(_noop)
    assert mgr.problems() == [
        "controller name 'configmap' is used more than once; names must be unique"
    ]


def test_leader_election_id_must_be_a_dns_subdomain() -> None:
    mgr = Manager(leader_election=True, leader_election_id="Widgets_Lock")
    mgr.controller().for_("v1", "ConfigMap").complete(_noop)
    [problem] = mgr.problems()
    assert "'Widgets_Lock' is not a valid DNS subdomain" in problem


def test_lease_timing_must_leave_room_to_renew() -> None:
    mgr = Manager(
        leader_election=True,
        leader_election_id="widgets.example.com",
        lease_timing=LeaseTiming(lease_duration=5, renew_deadline=10, retry_period=2),
    )
    mgr.controller().for_("v1", "ConfigMap").complete(_noop)
    assert mgr.problems() == ["lease duration must be greater than the renew deadline"]


def test_start_stops_with_every_problem_before_connecting() -> None:
    mgr = Manager(kubeconfig="/nonexistent/kubeconfig")
    mgr.controller().named("idle").complete(_noop)
    mgr.controller().named("orphan").owns("v1", "ConfigMap").complete(_noop)
    with pytest.raises(BuildError) as failed:
        asyncio.run(mgr.start())
    message = str(failed.value)
    assert "idle: no watches" in message and "orphan: owns() needs for_()" in message
