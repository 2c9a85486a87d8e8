from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from ctrltrace.explain import Code, Verdict, WarningCode, exit_code, explain
from ctrltrace.explain_text import ExplanationView, render_text
from ctrltrace.journal import Journal, JournalWriter
from ctrltrace.records import AttrValue, Record, Stage
from ctrltrace.testing import START, RunStory
from ctrltrace.vocabulary import Attr

T0 = START
FORBIDDEN = (
    'configmaps is forbidden: User "system:serviceaccount:ops:widget-controller" cannot list '
    'resource "configmaps" in API group "" in the namespace "shop"'
)


# -- one or more stories per verdict ---------------------------------------------------------


def test_an_event_that_reached_a_successful_reconcile_is_reconciled() -> None:
    story = RunStory()
    story.reconciled(story.event())
    verdict = story.explain().verdict
    assert verdict.code == "reconciled"
    assert "Reconcile of shop/web in configmap succeeded" in verdict.message
    assert "reconcile_id=rid-" in verdict.fix
    assert exit_code(verdict.code) == 0


def test_an_error_followed_by_a_successful_retry_is_reconciled_after_two_runs() -> None:
    story = RunStory()
    failed = story.reconciled(story.event(), "error", "RuntimeError: flaky")
    retry = story.requeue(failed)
    story.end(story.start(retry, retries=1))
    verdict = story.explain().verdict
    assert verdict.code == "reconciled"
    assert "after 2 runs" in verdict.message
    assert verdict.details["reconciles"] == 2


def test_a_failed_reconcile_names_the_error_and_the_next_attempt() -> None:
    story = RunStory()
    failed = story.reconciled(story.event(), "error", "RuntimeError: database is down")
    story.requeue(failed)
    verdict = story.explain(later=0.001).verdict
    assert verdict.code == "reconcile_failed"
    assert "RuntimeError: database is down" in verdict.message
    assert "retry attempt 1 due at" in verdict.message
    assert verdict.details["attempt"] == 1
    assert exit_code(verdict.code) == 3


def test_a_retry_long_overdue_is_reported_as_such() -> None:
    story = RunStory()
    story.requeue(story.reconciled(story.event(), "error", "ValueError: bad spec"))
    verdict = story.explain(later=600.0).verdict
    assert verdict.code == "reconcile_failed"
    assert "has not started" in verdict.message


def test_a_terminal_error_is_not_retried() -> None:
    story = RunStory()
    story.reconciled(story.event(), "terminal_error", "TerminalError: spec.size is negative")
    verdict = story.explain().verdict
    assert verdict.code == "terminal_error"
    assert "spec.size is negative" in verdict.message and "no retry" in verdict.message
    assert "change the object" in verdict.fix


def test_a_requested_requeue_is_scheduled_with_its_due_time() -> None:
    story = RunStory()
    done = story.reconciled(story.event(), "requeue_after")
    requeue = story.requeue(done, "after", delay=3600.0)
    explanation = story.explain()
    verdict = explanation.verdict
    assert verdict.code == "requeue_scheduled"
    assert "next run due at" in verdict.message and "(in 59m" in verdict.message
    assert verdict.details["due"] == requeue.attrs["due"]
    assert exit_code(verdict.code) == 0


def test_a_periodic_requeue_is_followed_to_the_latest_run() -> None:
    story = RunStory()
    done = story.reconciled(story.event(), "requeue_after")
    again = story.start(story.requeue(done, "after", delay=0.001))
    story.end(again, "error", "KeyError: 'x'")
    verdict = story.explain().verdict
    assert verdict.code == "reconcile_failed"  # no REQUEUE recorded yet for the retry
    assert verdict.message.endswith("no retry recorded")


def test_an_enqueued_request_without_a_worker_yet_is_queued() -> None:
    story = RunStory()
    story.dispatch(story.event())
    verdict = story.explain(later=3.0).verdict
    assert verdict.code == "queued"
    assert (
        "configmap queued shop/web" in verdict.message and "waiting for a worker" in verdict.message
    )
    assert "max_concurrent_reconciles" in verdict.fix


def test_queued_when_the_manager_stopped_before_a_worker_took_it() -> None:
    story = RunStory()
    story.dispatch(story.event())
    story.record(Stage.MANAGER, "stopped", reason="stopped")
    verdict = story.explain().verdict
    assert verdict.code == "queued"
    assert "the manager stopped" in verdict.message


def test_an_event_coalesced_into_the_next_reconcile_follows_that_reconcile() -> None:
    story = RunStory()
    first = story.start(story.dispatch(story.event()))
    behind = story.dispatch(story.event(), "requeued_after_processing")
    story.end(first)
    second = story.start(behind)
    explanation = story.explain()
    assert explanation.verdict.code == "in_progress"
    assert second.reconcile_id in explanation.verdict.message
    assert "running for" in explanation.verdict.message


def test_a_missing_cause_link_falls_back_to_the_next_reconcile_of_the_request() -> None:
    story = RunStory()
    story.dispatch(story.event(), "deduplicated")
    story.record(
        Stage.RECONCILE_START,
        "started",
        controller="configmap",
        request="shop/web",
        reconcile_id="rid-x",
    )
    assert story.explain().verdict.details["reconcile_id"] == "rid-x"


def test_a_running_reconcile_is_in_progress() -> None:
    story = RunStory()
    start = story.start(story.dispatch(story.event()))
    verdict = story.explain(later=5.0).verdict
    assert verdict.code == "in_progress"
    assert "running for 5.0s" in verdict.message
    assert verdict.details["reconcile_id"] == start.reconcile_id


def test_an_event_a_predicate_dropped_names_the_predicate_and_its_reason() -> None:
    story = RunStory()
    story.reconciled(story.event())
    story.dispatch(
        story.event(),
        "dropped_by_predicate",
        reason="generation unchanged (1 → 1): a status or metadata update",
        predicate="GenerationChanged",
    )
    verdict = story.explain().verdict
    assert verdict.code == "dropped_by_predicate"
    assert "predicate GenerationChanged dropped the update event" in verdict.message
    assert "generation unchanged (1 → 1)" in verdict.message
    assert "metadata.generation" in verdict.fix
    assert verdict.details["predicate"] == "GenerationChanged"


def test_a_user_predicate_gets_a_generic_fix() -> None:
    story = RunStory()
    story.dispatch(
        story.event(),
        "dropped_by_predicate",
        reason="update function only_prod returned False",
        predicate="only_prod",
    )
    verdict = story.explain().verdict
    assert verdict.code == "dropped_by_predicate"
    assert "relax only_prod" in verdict.fix


def test_a_child_without_controller_true_is_not_mapped() -> None:
    story = RunStory()
    reason = (
        "the ownerReference to example.com/Widget shop lacks controller: true; set "
        "controller: true on it or use match_every_owner=True"
    )
    story.dispatch(
        story.event("orphan", "ADDED"),
        "not_mapped",
        controller="widget",
        reason=reason,
        handler="for owner example.com/Widget (controller only)",
    )
    verdict = story.explain("orphan").verdict
    assert verdict.code == "not_mapped"
    assert "lacks controller: true" in verdict.message
    assert "for owner example.com/Widget" in verdict.message
    assert "controller: true" in verdict.fix


def test_a_child_event_mapped_to_its_owner_is_followed_to_the_owners_reconcile() -> None:
    story = RunStory()
    child_event = story.event("web-config", "ADDED")
    mapped = story.dispatch(
        child_event, controller="widget", request="shop/web", reason="controller owner Widget web"
    )
    story.end(story.start(mapped), "error", "RuntimeError: quota")
    as_owner = story.explain("web")
    as_child = story.explain("web-config")
    assert as_owner.verdict.code == as_child.verdict.code == "reconcile_failed"
    assert "Reconcile of shop/web in widget" in as_child.verdict.message
    whats = [entry.what for entry in as_owner.timeline]
    assert any("ADDED ConfigMap shop/web-config" in what for what in whats)


def test_no_watch_for_the_kind_is_not_watched() -> None:
    story = RunStory(synced=False)
    verdict = story.explain(kind="Widget").verdict
    assert verdict.code == "not_watched"
    assert "no informer watches Widget" in verdict.message
    assert ".for_()" in verdict.fix


def test_watched_only_in_other_namespaces_is_not_watched() -> None:
    story = RunStory(synced=False)
    story.watch("synced", namespace="staging")
    verdict = story.explain(kind="ConfigMap").verdict
    assert verdict.code == "not_watched"
    assert "only in namespaces staging, not in shop" in verdict.message


def test_an_event_no_controller_dispatched_is_not_watched_by_that_controller() -> None:
    story = RunStory()
    story.reconciled(story.event())
    verdict = story.explain(controller="widget").verdict
    assert verdict.code == "not_watched"
    assert "no controller widget dispatched it" in verdict.message


def test_a_forbidden_watch_names_the_user_verb_and_resource() -> None:
    story = RunStory(synced=False)
    story.watch("forbidden", FORBIDDEN, namespace="shop", status=403, resource="configmaps")
    verdict = story.explain(kind="ConfigMap").verdict
    assert verdict.code == "watch_forbidden"
    assert (
        "system:serviceaccount:ops:widget-controller cannot list configmaps in namespace shop"
        in verdict.message
    )
    assert "kubectl create role ctrltrace-configmaps -n shop" in verdict.fix
    assert "--serviceaccount=ops:widget-controller" in verdict.fix
    assert verdict.details["verb"] == "list"


def test_a_watch_forbidden_after_it_synced_is_still_forbidden() -> None:
    story = RunStory()
    story.watch("forbidden", 'secrets is forbidden: User "bob" cannot watch resource "secrets"')
    verdict = story.explain().verdict
    assert verdict.code == "watch_forbidden"
    assert "bob cannot watch secrets" in verdict.message
    assert "clusterrole" in verdict.fix and "--user=bob" in verdict.fix


def test_a_forbidden_message_in_other_words_is_quoted() -> None:
    story = RunStory(synced=False)
    story.watch("forbidden", "denied by a webhook", resource="configmaps")
    verdict = story.explain(kind="ConfigMap").verdict
    assert verdict.code == "watch_forbidden"
    assert verdict.message.endswith("(403): denied by a webhook")
    assert "on configmaps" in verdict.fix


def test_a_kind_that_is_not_served_is_kind_not_found() -> None:
    story = RunStory(synced=False)
    story.watch("kind_not_found", "no resource for example.com/v1 Widget", kind="Widget")
    verdict = story.explain(kind="Widget").verdict
    assert verdict.code == "kind_not_found"
    assert "Widget (example.com/v1) is not served" in verdict.message
    assert "CRD" in verdict.fix


def test_a_standby_replica_is_not_leader_and_names_the_holder() -> None:
    story = RunStory()
    story.lease("standby", holder="widgets-7d9f-x2")
    story.dispatch(story.event())
    explanation = story.explain()
    verdict = explanation.verdict
    assert verdict.code == "not_leader"
    assert "held by widgets-7d9f-x2" in verdict.message
    assert verdict.details["holder"] == "widgets-7d9f-x2"
    assert any(entry.stage is Stage.LEASE for entry in explanation.timeline)


def test_a_leader_with_a_queued_request_is_just_queued() -> None:
    story = RunStory()
    story.lease("standby", holder="other")
    story.lease("acquired", holder="pod-a")
    story.dispatch(story.event())
    assert story.explain().verdict.code == "queued"


def test_a_controller_waiting_for_caches_is_cache_not_synced() -> None:
    story = RunStory(synced=False)
    story.controller("cache_not_synced", "caches not synced after 120s: v1/Secret (forbidden)")
    story.dispatch(story.event())
    verdict = story.explain().verdict
    assert verdict.code == "cache_not_synced"
    assert "v1/Secret (forbidden)" in verdict.message


def test_an_informer_that_never_listed_is_cache_not_synced() -> None:
    story = RunStory(synced=False)
    story.watch("disconnected", "connection failed: connection refused")
    verdict = story.explain(kind="ConfigMap").verdict
    assert verdict.code == "cache_not_synced"
    assert "connection refused" in verdict.message


def test_reconciles_triggered_by_their_own_writes_are_a_loop() -> None:
    story = RunStory()
    event = story.event()
    for _ in range(4):
        start = story.start(story.dispatch(event))
        write = story.write(start)
        story.end(start)
        event = story.event(writer="widget-controller", owned_write=write)
    story.reconciled(event)
    verdict = story.explain().verdict
    assert verdict.code == "self_triggered"
    assert "the last 4 reconciles of shop/web" in verdict.message
    assert "its own update_status" in verdict.message
    assert "GenerationChanged" in verdict.fix
    assert verdict.details["latest_code"] == "reconciled"


def test_two_self_caused_reconciles_are_not_yet_a_loop() -> None:
    story = RunStory()
    event = story.event()
    for _ in range(2):
        start = story.start(story.dispatch(event))
        write = story.write(start)
        story.end(start)
        event = story.event(owned_write=write)
    story.reconciled(event)
    assert story.explain().verdict.code == "reconciled"


def test_a_loop_broken_by_a_predicate_is_the_predicate() -> None:
    story = RunStory()
    event = story.event()
    for _ in range(4):
        start = story.start(story.dispatch(event))
        write = story.write(start)
        story.end(start)
        event = story.event(owned_write=write)
    story.dispatch(event, "dropped_by_predicate", predicate="GenerationChanged", reason="same")
    assert story.explain().verdict.code == "dropped_by_predicate"


def test_a_healthy_watch_without_events_for_the_object_is_no_events() -> None:
    story = RunStory()
    story.reconciled(story.event("other"))
    verdict = story.explain(kind="ConfigMap").verdict
    assert verdict.code == "no_events"
    assert "no event for shop/web was seen" in verdict.message
    assert "label selector" in verdict.fix


def test_no_events_while_the_watch_is_reconnecting_says_so() -> None:
    story = RunStory()
    story.watch("disconnected", "connection failed: reset by peer")
    verdict = story.explain().verdict
    assert verdict.code == "no_events"
    assert "the watch is now disconnected: connection failed: reset by peer" in verdict.message


def test_without_a_kind_a_failing_watch_of_any_kind_is_reported() -> None:
    story = RunStory()
    story.watch("kind_not_found", "no resource for example.com/v1 Widget", kind="Widget")
    verdict = story.explain().verdict
    assert verdict.code == "kind_not_found"


# -- several controllers, several runs -------------------------------------------------------


def test_of_several_controllers_the_one_that_got_furthest_decides() -> None:
    story = RunStory()
    event = story.event()
    story.dispatch(
        event, "dropped_by_predicate", controller="audit", predicate="LabelSelector", reason="no"
    )
    story.end(story.start(story.dispatch(event)))
    verdict = story.explain().verdict
    assert verdict.code == "reconciled"
    assert "(other dispatches: audit: dropped_by_predicate)" in verdict.message
    assert verdict.details["other_dispatches"] == [
        {"controller": "audit", "request": "shop/web", "code": "dropped_by_predicate"}
    ]
    only_audit = story.explain(controller="audit").verdict
    assert only_audit.code == "dropped_by_predicate"
    assert "other dispatches" not in only_audit.message


def test_ids_reused_by_a_later_run_do_not_join_its_chains_to_the_earlier_ones() -> None:
    # Each process counts record ids from 1: both runs use the same ids for the same steps.
    earlier = RunStory(numbered=True)
    earlier.reconciled(earlier.event(), "terminal_error", "TerminalError: old")
    later = RunStory(numbered=True, start=earlier.time + 100)
    later.dispatch(later.event())
    combined = earlier.records + later.records
    assert combined[4].id == combined[4 + len(earlier.records)].id  # the two dispatches
    later.records = combined
    assert later.explain().verdict.code == "queued"


# -- the timeline and how it is shown --------------------------------------------------------


def _failing_story() -> RunStory:
    story = RunStory()
    event = story.event(generation=3, writer="kubectl-edit")
    story.dispatch(
        event,
        "dropped_by_predicate",
        controller="audit",
        predicate="GenerationChanged",
        reason="generation unchanged (3 → 3)",
    )
    failed = story.reconciled(event, "error", "RuntimeError: boom")
    start = story.start(story.requeue(failed), retries=1)
    write = story.write(start)
    story.end(start)
    story.reconciled(story.event(writer="configmap-controller", owned_write=write))
    return story


def test_timeline_entries_say_what_each_stage_did() -> None:
    explanation = _failing_story().explain()
    whats = "\n".join(entry.what for entry in explanation.timeline)
    assert "MODIFIED ConfigMap shop/web rv 101 gen 3 by kubectl-edit" in whats
    assert "by configmap-controller (own write)" in whats
    assert "dropped by GenerationChanged: generation unchanged (3 → 3)" in whats
    assert "queued shop/web (the object itself)" in whats
    assert "shop/web after 2.0 ms in the queue" in whats
    assert "retry 1" in whats
    assert "error in 42.0 ms: RuntimeError: boom" in whats
    assert "rate_limited: retry attempt 1, next run in 5.0 ms at" in whats
    assert "update_status ConfigMap shop/web → rv" in whats
    event = explanation.timeline[0]
    assert event.stage is Stage.EVENT
    assert event.details["resource_version"] == "101" and event.details["generation"] == 3
    assert event.details["writer"] == "kubectl-edit"


def test_the_timeline_keeps_the_latest_entries_and_counts_the_rest() -> None:
    story = RunStory()
    for _ in range(30):
        story.reconciled(story.event())
    explanation = story.explain(timeline_limit=12)
    assert len(explanation.timeline) == 12
    assert explanation.omitted == 30 * 4 - 12
    assert explanation.timeline[-1].outcome == "success"
    assert explanation.to_json()["timeline_omitted"] == explanation.omitted


def test_json_has_the_object_the_timeline_and_a_verdict_from_the_vocabulary() -> None:
    document = _failing_story().explain().to_json()
    assert set(document) >= {"object", "timeline", "verdict"}
    assert document["object"] == {
        "namespace": "shop",
        "name": "web",
        "kind": None,
        "controller": None,
        "key": "shop/web",
    }
    assert document["verdict"]["code"] == "reconciled"
    assert set(document["verdict"]) == {"code", "message", "fix", "details", "warnings"}
    assert document["verdict"]["warnings"] == []
    entry = document["timeline"][0]
    assert set(entry) == {"time", "at", "stage", "outcome", "what", "controller", "details"}
    assert entry["at"].endswith("Z")
    assert json.loads(json.dumps(document)) == document


def test_rendered_text_fits_100_columns_without_escape_codes() -> None:
    for explanation in (_failing_story().explain(), RunStory(synced=False).explain()):
        text = render_text(explanation, width=100)
        lines = text.splitlines()
        assert "\x1b" not in text
        assert lines and all(len(line) <= 100 for line in lines), max(lines, key=len)
        assert len(lines) <= 45  # one screen
    text = render_text(_failing_story().explain())
    assert "explain shop/web" in text
    assert "✓ reconciled" in text and "fix:" in text
    assert "✗ dispatch" in text and "✗ reconcile" in text and "↻ requeue" in text
    assert "(own write)" in text


def test_a_long_message_wraps_instead_of_overflowing() -> None:
    story = RunStory()
    story.reconciled(story.event(), "terminal_error", "TerminalError: " + "very long " * 40)
    lines = render_text(story.explain(), width=80).splitlines()
    assert any("very long" in line for line in lines)
    assert all(len(line) <= 80 for line in lines)


def test_a_colour_terminal_gets_colour() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, width=100, force_terminal=True, color_system="standard")
    console.print(ExplanationView(_failing_story().explain()))
    assert "\x1b[" in buffer.getvalue()


# -- the vocabulary --------------------------------------------------------------------------


def test_the_vocabulary_is_closed_and_exit_codes_follow_it() -> None:
    assert {str(code) for code in Code} == {
        "reconciled",
        "reconcile_failed",
        "terminal_error",
        "requeue_scheduled",
        "queued",
        "in_progress",
        "dropped_by_predicate",
        "not_mapped",
        "not_watched",
        "watch_forbidden",
        "kind_not_found",
        "not_leader",
        "cache_not_synced",
        "self_triggered",
        "deletion_blocked",
        "no_events",
        "evidence_missing",
    }
    assert {str(code) for code in WarningCode} == {
        "watch_forbidden",
        "watch_disconnected",
        "lease_lost",
        "journal_gap",
        "evidence_missing",
        "standby_blind",
    }
    assert {code for code in Code if exit_code(code) == 0} == {"reconciled", "requeue_scheduled"}
    assert all(
        exit_code(code) == 3 for code in Code if code not in ("reconciled", "requeue_scheduled")
    )
    with pytest.raises(ValueError, match="not_a_code"):
        exit_code("not_a_code")


# -- with the journal ------------------------------------------------------------------------


def test_explaining_from_the_journal_gives_the_same_verdict(tmp_path: Path) -> None:
    story = _failing_story()
    story.reconciled(story.event("web-config"))
    with JournalWriter(tmp_path / "journal.db") as writer:
        for record in story.records:
            writer(record)
    with Journal(tmp_path / "journal.db") as journal:
        from_journal = explain(
            journal.about("shop", "web"),
            namespace="shop",
            name="web",
            watch_records=journal.watch_records(),
            lease_records=journal.lease_records(),
            controller_records=journal.controller_records(),
            now=story.time + 1.0,
        )
    assert from_journal.verdict == story.explain().verdict
    assert from_journal.timeline
    assert not any("web-config" in entry.what for entry in from_journal.timeline)


def test_a_child_read_from_the_journal_is_followed_through_its_owners_retries(
    tmp_path: Path,
) -> None:
    story = RunStory()
    mapped = story.dispatch(
        story.event("web-config", "ADDED"),
        controller="widget",
        request="shop/web",
        reason="controller owner Widget web",
    )
    failed = story.end(story.start(mapped), "error", "RuntimeError: quota")
    story.end(story.start(story.requeue(failed), retries=1))
    story.reconciled(story.event("web", kind="Widget"))  # the owner's own, later, business
    with JournalWriter(tmp_path / "journal.db") as writer:
        for record in story.records:
            writer(record)
    with Journal(tmp_path / "journal.db") as journal:
        records = journal.about("shop", "web-config")
    assert [record.stage for record in records] == [
        Stage.EVENT,
        Stage.DISPATCH,
        Stage.RECONCILE_START,
        Stage.RECONCILE,
        Stage.REQUEUE,
        Stage.RECONCILE_START,
        Stage.RECONCILE,
    ]
    verdict = explain(records, namespace="shop", name="web-config", now=story.time).verdict
    assert verdict.code == "reconciled"
    assert "Reconcile of shop/web in widget succeeded after 2 runs" in verdict.message


# -- the pipeline around the object (issue 14) ------------------------------------------------

WATCH_FORBIDDEN_CONFIGMAPS = (
    'configmaps is forbidden: User "widget-operator" cannot watch resource "configmaps" in API '
    'group "" in the namespace "shop"'
)


def _blocked_story(outcome: str, reason: str) -> RunStory:
    """A Widget controller that also owns ConfigMaps: Widgets sync, ConfigMaps do not."""
    story = RunStory(synced=False)
    story.controller("watching", kind="Widget", api_version="example.com/v1", role="for_")
    story.controller("watching", kind="ConfigMap", api_version="v1", role="owns")
    story.watch("listed", kind="Widget")
    story.watch("synced", kind="Widget")
    story.watch(outcome, reason, kind="ConfigMap", namespace="shop", status=403)
    story.dispatch(story.event(kind="Widget"))
    return story


def test_a_request_in_a_controller_blocked_by_a_forbidden_watch_names_that_watch() -> None:
    verdict = _blocked_story("forbidden", WATCH_FORBIDDEN_CONFIGMAPS).explain().verdict
    assert verdict.code == "cache_not_synced"
    assert "waiting for a worker" not in verdict.message
    assert "workers have not started" in verdict.message
    assert "ConfigMap" in verdict.message
    assert "widget-operator cannot watch configmaps" in verdict.message
    assert "--verb=get,list,watch --resource=configmaps" in verdict.fix
    (blocking,) = verdict.details["blocking"]
    assert blocking["kind"] == "ConfigMap"
    assert blocking["error"] == WATCH_FORBIDDEN_CONFIGMAPS
    assert blocking["rule"] == {
        "apiGroups": [""],
        "resources": ["configmaps"],
        "verbs": ["get", "list", "watch"],
    }


def test_a_controller_blocked_by_a_kind_not_served_says_to_install_it() -> None:
    story = _blocked_story("kind_not_found", "example.com/v1 does not serve kind ConfigMap")
    verdict = story.explain().verdict
    assert verdict.code == "cache_not_synced"
    assert "Install the CRD that defines ConfigMap" in verdict.fix


def test_a_controller_whose_caches_are_still_listing_is_queued_without_workers() -> None:
    story = RunStory(synced=False)
    story.controller("watching", kind="ConfigMap", api_version="v1", role="for_")
    story.dispatch(story.event())
    verdict = story.explain().verdict
    assert verdict.code == "queued"
    assert "waiting for a worker" not in verdict.message
    assert verdict.details["workers"] == 0


def test_workers_started_in_an_earlier_run_do_not_count() -> None:
    story = _blocked_story("forbidden", WATCH_FORBIDDEN_CONFIGMAPS)
    story.records.insert(0, Record(T0 - 10, Stage.CONTROLLER, "started", controller="configmap"))
    story.records.insert(1, Record(T0 - 5, Stage.MANAGER, "stopped"))
    assert story.explain().verdict.code == "cache_not_synced"


def test_queued_says_what_the_busy_workers_are_doing() -> None:
    story = RunStory()
    story.reconciled(story.event("earlier"))  # a usual duration: 42 ms
    busy = story.start(story.dispatch(story.event("slow")))
    story.dispatch(story.event())
    verdict = story.explain(later=60).verdict
    assert verdict.code == "queued"
    assert "waiting for a worker" in verdict.message
    assert "shop/slow" in verdict.message
    assert busy.reconcile_id in verdict.message
    assert verdict.details["busy"][0]["reconcile_id"] == busy.reconcile_id
    assert busy.reconcile_id in verdict.fix  # it has run far beyond the p99: look at it


def test_queued_again_while_the_same_key_is_reconciled_is_held_by_that_run() -> None:
    story = RunStory()
    event = story.event()
    running = story.start(story.dispatch(event))
    story.dispatch(story.event(), "requeued_after_processing")
    verdict = story.explain().verdict
    assert verdict.code == "queued"
    assert "held" in verdict.message
    assert verdict.details["held_by"] == running.reconcile_id


def test_in_progress_compares_with_the_controllers_usual_durations() -> None:
    story = RunStory()
    for name in ("a", "b", "c"):
        story.reconciled(story.event(name))
    start = story.start(story.dispatch(story.event()))
    verdict = story.explain(later=30).verdict
    assert verdict.code == "in_progress"
    assert "(p50)" in verdict.message and "(p99)" in verdict.message
    assert "looks hung" in verdict.message
    assert verdict.details["p99_s"] == pytest.approx(0.042)
    assert start.reconcile_id in verdict.fix


def test_a_reconciled_object_whose_watch_is_forbidden_carries_a_warning() -> None:
    story = RunStory()
    story.reconciled(story.event())
    story.watch("forbidden", WATCH_FORBIDDEN_CONFIGMAPS, namespace="shop", status=403)
    story.watch("listed", namespace="shop")  # it may still list: changes arrive by re-list
    explanation = story.explain(kind="ConfigMap")
    assert explanation.verdict.code == "reconciled"
    (warning,) = explanation.verdict.warnings
    assert warning.code == "watch_forbidden"
    assert "only when the informer lists again" in warning.message
    assert "--verb=get,list,watch" in warning.fix
    document = explanation.to_json()
    assert document["verdict"]["warnings"][0]["code"] == "watch_forbidden"
    assert "⚠ watch_forbidden" in render_text(explanation)


@pytest.mark.parametrize(
    ("failures", "reason"),
    [
        (("forbidden", "listed"), WATCH_FORBIDDEN_CONFIGMAPS),  # re-listed, watch refused
        (("disconnected",), "connection failed: reset"),
    ],
)
def test_a_watch_accepted_again_after_its_failures_is_no_warning(
    failures: tuple[str, ...], reason: str
) -> None:
    story = RunStory()
    story.reconciled(story.event())
    for outcome in failures:
        story.watch(outcome, reason, namespace="shop")
    assert [str(w.code) for w in story.explain(kind="ConfigMap").verdict.warnings] != []
    story.watch("resumed", "watching again from resourceVersion 7", namespace="shop")
    assert story.explain(kind="ConfigMap").verdict.warnings == ()


def test_a_watch_failing_now_lease_lost_and_journal_gap_are_warnings() -> None:
    story = RunStory()
    story.lease("acquired", "pod-a")
    event = story.event()
    story.reconciled(event)
    story.record(
        Stage.MANAGER,
        "journal_gap",
        reason="the writer's buffer was full",
        attrs={"count": 128, "first_time": event.time, "last_time": story.time},
    )
    story.watch("disconnected", "connection failed: refused")
    story.lease("lost", "pod-b")
    warnings = {str(w.code): w for w in story.explain(kind="ConfigMap").verdict.warnings}
    assert set(warnings) == {"watch_disconnected", "lease_lost", "journal_gap"}
    assert "refused" in warnings["watch_disconnected"].message
    assert "128 records" in warnings["journal_gap"].message
    assert "may be incomplete" in warnings["journal_gap"].message


def test_a_gap_outside_the_evidence_is_no_warning() -> None:
    story = RunStory()
    story.record(
        Stage.MANAGER,
        "journal_gap",
        reason="write failed",
        attrs={"count": 5, "first_time": T0 - 100, "last_time": T0 - 90},
    )
    story.reconciled(story.event())
    assert story.explain().verdict.warnings == ()


def test_finalizers_that_stay_after_reconciles_block_the_deletion() -> None:
    story = RunStory()
    deleting: dict[str, AttrValue] = {
        "deletion_timestamp": "2026-12-07T02:00:00Z",
        "finalizers": "example.com/cleanup",
    }
    story.reconciled(story.event(extra=deleting))
    story.reconciled(story.event(extra=deleting))
    verdict = story.explain().verdict
    assert verdict.code == "deletion_blocked"
    assert "example.com/cleanup" in verdict.message
    assert "2026-12-07T02:00:00Z" in verdict.message
    assert verdict.details["reconciles_since"] == 2
    assert "remove" in verdict.fix and "example.com/cleanup" in verdict.fix
    assert exit_code(verdict.code) == 3


def test_a_deleted_object_says_so_and_that_reconcile_ran() -> None:
    story = RunStory()
    story.reconciled(story.event())
    story.reconciled(story.event(outcome="DELETED"))
    verdict = story.explain().verdict
    assert verdict.code == "reconciled"
    assert "was deleted" in verdict.message
    assert "Reconcile then ran" in verdict.message


def _api_error(status: int, reason: str, message: str, method: str = "PUT") -> Verdict:
    story = RunStory()
    text = (
        f"ApiError: {method} /api/v1/namespaces/shop/configmaps/web: {status} {reason}: {message}"
    )
    attrs: dict[str, AttrValue] = {"api_status": status, "api_reason": reason, "api_method": method}
    story.end(story.start(story.dispatch(story.event())), "error", text, **attrs)
    return story.explain().verdict


def test_a_conflict_is_a_stale_read_with_its_own_fix() -> None:
    verdict = _api_error(409, "Conflict", "the object has been modified")
    assert verdict.code == "reconcile_failed"
    assert "stale read" in verdict.message
    assert "patch instead of update" in verdict.fix
    assert "Fix the error in the reconciler" not in verdict.fix


def test_conflicts_in_a_row_are_flagged() -> None:
    story = RunStory()
    attrs: dict[str, AttrValue] = {"api_status": 409, "api_reason": "Conflict", "api_method": "PUT"}
    end = story.end(story.start(story.dispatch(story.event())), "error", "409 Conflict: x", **attrs)
    for _ in range(2):
        end = story.end(story.start(story.requeue(end)), "error", "409 Conflict: x", **attrs)
    story.requeue(end)
    verdict = story.explain().verdict
    assert "3 times in a row" in verdict.message
    assert verdict.details["conflicts_in_a_row"] == 3


def test_not_found_on_a_read_means_return_without_error() -> None:
    verdict = _api_error(404, "NotFound", 'configmaps "web" not found', method="GET")
    assert "object is gone" in verdict.message
    assert "Return without error" in verdict.fix


def test_forbidden_on_a_write_names_the_missing_rule_in_doctors_words() -> None:
    message = (
        'configmaps "web" is forbidden: User "widget-operator" cannot update resource '
        '"configmaps" in API group "" in the namespace "shop"'
    )
    verdict = _api_error(403, "Forbidden", message)
    assert verdict.fix.startswith(
        'grant widget-operator this rule in a Role in shop: apiGroups [""], resources '
        "[configmaps], verbs [update]"
    )


def test_invalid_names_the_field_and_the_servers_message() -> None:
    message = 'ConfigMap "web" is invalid: metadata.labels: Invalid value: "a b": must be valid'
    verdict = _api_error(422, "Invalid", message)
    assert verdict.details["field"] == "metadata.labels"
    assert "metadata.labels" in verdict.fix and "must be valid" in verdict.fix


@pytest.mark.parametrize(("status", "reason"), [(429, "TooManyRequests"), (503, "Unavailable")])
def test_throttling_and_server_errors_are_transient(status: int, reason: str) -> None:
    verdict = _api_error(status, reason, "try again")
    assert "transient" in verdict.message
    assert verdict.details["transient"] is True


def test_a_timeout_is_transient_and_user_errors_keep_the_generic_fix() -> None:
    story = RunStory()
    story.end(story.start(story.dispatch(story.event())), "error", "TimeoutError: read")
    assert "transient" in story.explain().verdict.message
    assert "Fix the error in the reconciler" in _failing_reconcile_fix()


def _failing_reconcile_fix() -> str:
    story = RunStory()
    story.end(story.start(story.dispatch(story.event())), "error", "KeyError: 'spec'")
    return story.explain().verdict.fix


@pytest.mark.parametrize(
    ("outcome", "attrs", "said", "fix"),
    [
        (
            "dropped_by_predicate",
            {"predicate": "only_big", "reason": "raised KeyError: 'size'", "raised": "KeyError"},
            "predicate only_big raised KeyError",
            "Fix only_big",
        ),
        (
            "not_mapped",
            {
                "handler": "map function widgets_of",
                "reason": "map function raised ValueError: no owner label",
            },
            "map function widgets_of raised ValueError",
            "Fix map function widgets_of",
        ),
    ],
    ids=["predicate", "map_function"],
)
def test_a_function_that_raised_is_named_and_never_blamed_on_owner_references(
    outcome: str, attrs: dict[str, str], said: str, fix: str
) -> None:
    story = RunStory()
    story.dispatch(story.event(), outcome, **attrs)
    verdict = story.explain().verdict
    assert verdict.code == outcome
    assert said in verdict.message
    assert "event was dropped" in verdict.message
    assert fix in verdict.fix
    assert "controller: true" not in verdict.fix and "ownerReference" not in verdict.fix


def test_no_events_under_a_label_selector_names_it_and_the_kubectl_to_check() -> None:
    story = RunStory(synced=False)
    story.controller("watching", kind="ConfigMap", api_version="v1", label_selector="app=web")
    story.watch("listed", resource="configmaps")
    story.watch("synced", resource="configmaps")
    verdict = story.explain("other", kind="ConfigMap").verdict
    assert verdict.code == "no_events"
    assert "holds only objects with labels app=web" in verdict.message
    assert "kubectl get configmaps other -n shop -l 'app=web'" in verdict.fix


def test_not_watched_in_this_namespace_names_the_namespaces_cached() -> None:
    story = RunStory(synced=False)
    story.controller("watching", kind="ConfigMap", api_version="v1", namespaces="a,b")
    story.watch("listed", namespace="a", resource="configmaps")
    story.watch("synced", namespace="b", resource="configmaps")
    verdict = story.explain(kind="ConfigMap").verdict
    assert verdict.code == "not_watched"
    assert "cached only in namespaces a, b" in verdict.message
    assert "kubectl get configmaps web -n shop" in verdict.fix
    assert "add shop to the manager's namespaces" in verdict.fix


def test_a_name_without_a_namespace_for_kinds_cached_in_namespaces_asks_for_one() -> None:
    story = RunStory(synced=False)
    story.controller("watching", kind="ConfigMap", api_version="v1", namespaces="a,b")
    story.watch("synced", namespace="a", resource="configmaps")
    story.watch("synced", namespace="b", resource="configmaps")
    verdict = story.explain("web", namespace="").verdict
    assert verdict.code == "not_watched"
    assert (
        "this object's kind is watched only in namespaces a, b, and web was given without a "
        "namespace, which names a cluster-scoped object"
    ) in verdict.message
    assert "cached only in namespaces" not in verdict.message  # no namespace to add
    assert "ctrltrace explain NAMESPACE/web" in verdict.fix
    assert "add  to" not in verdict.fix


def test_without_events_the_gap_of_the_run_that_ended_is_still_warned_of() -> None:
    story = RunStory()
    story.record(
        Stage.MANAGER,
        "journal_gap",
        reason="buffer full",
        attrs={"count": 9, "first_time": T0, "last_time": story.time},
    )
    story.record(Stage.MANAGER, "stopped", reason="stopped")
    warnings = story.explain("lost", kind="ConfigMap").verdict.warnings
    assert [str(warning.code) for warning in warnings] == ["journal_gap"]


# -- evidence from several replicas (traces) ---------------------------------------------------


def _replicas(*stories: tuple[str, RunStory]) -> RunStory:
    """One story of every replica's records, each marked with its replica, in time order."""
    merged = RunStory(synced=False)
    merged.records = sorted(
        (
            dataclasses.replace(record, attrs={**record.attrs, Attr.REPLICA: replica})
            for replica, story in stories
            for record in story.records
        ),
        key=lambda record: record.time,
    )
    merged.time = max(story.time for _, story in stories)
    return merged


def _standby(after: RunStory) -> RunStory:
    """A replica standing by, whose informer sees the same event as ``after``'s, later."""
    standby = RunStory(synced=False, start=after.records[0].time + 0.02)
    standby.watch("listed")
    standby.watch("synced")
    standby.lease("standby", "pod-a")
    return standby


def test_a_standby_replica_seeing_the_event_last_does_not_hide_the_leaders_reconcile() -> None:
    leader = RunStory()
    leader.lease("acquired", "pod-a")
    leader.reconciled(leader.event())
    standby = _standby(leader)
    standby.dispatch(standby.event())  # the same change (rv 101), queued where no worker runs
    assert standby.records[-2].time > leader.records[-4].time  # its event is the latest
    verdict = _replicas(("pod-a", leader), ("pod-b", standby)).explain().verdict
    assert verdict.code is Code.RECONCILED
    assert verdict.details["other_dispatches"] == [
        {"controller": "configmap", "request": "shop/web", "code": "not_leader", "replica": "pod-b"}
    ]
    assert verdict.warnings == ()


def test_a_request_waiting_in_the_leaders_queue_is_queued_not_not_leader() -> None:
    leader = RunStory()
    leader.lease("acquired", "pod-a")
    leader.dispatch(leader.event())
    standby = _standby(leader)
    standby.dispatch(standby.event())
    verdict = _replicas(("pod-a", leader), ("pod-b", standby)).explain().verdict
    assert verdict.code is Code.QUEUED
    assert "waiting" in verdict.message or "worker" in verdict.message


def test_a_standby_is_not_leader_when_no_other_replica_saw_the_event() -> None:
    leader = RunStory()
    leader.lease("acquired", "pod-a")
    standby = _standby(leader)
    standby.dispatch(standby.event())
    verdict = _replicas(("pod-a", leader), ("pod-b", standby)).explain().verdict
    assert verdict.code is Code.NOT_LEADER


# -- no event at all, across replicas: each judged by its own watches ------------------------


def _watching(story: RunStory, watch: str) -> RunStory:
    """``story``'s watch of ConfigMap listed, then came to ``watch``."""
    story.watch("listed")
    if watch == "forbidden":
        story.watch("forbidden", FORBIDDEN, status=403, resource="configmaps")
    else:
        story.watch(watch)
    return story


def _leading(watch: str) -> RunStory:
    """``pod-a``: it took the lease, then its watch of ConfigMap came to ``watch``."""
    leader = RunStory(synced=False)
    leader.lease("acquired", "pod-a")
    return _watching(leader, watch)


def _standing_by(watch: str, after: RunStory) -> RunStory:
    """``pod-b``: standing by, its watch of ConfigMap at ``watch``, recorded after the leader's."""
    standby = RunStory(synced=False, start=after.time + 0.005)
    standby.lease("standby", "pod-a", identity="pod-b")
    return _watching(standby, watch)


def test_without_events_the_leaders_forbidden_watch_counts_not_a_standbys_synced_one() -> None:
    leader = _leading("forbidden")
    standby = _standing_by("synced", leader)
    explanation = _replicas(("pod-a", leader), ("pod-b", standby)).explain(kind="ConfigMap")
    verdict = explanation.verdict
    assert verdict.code is Code.WATCH_FORBIDDEN
    assert "widget-controller cannot list configmaps" in verdict.message
    assert "(pod-a holds the leader lease; other replicas: pod-b: no_events)" in verdict.message
    assert verdict.details["replica"] == "pod-a"
    assert verdict.details["other_replicas"] == [{"replica": "pod-b", "code": "no_events"}]
    assert verdict.warnings == ()
    watches = [entry for entry in explanation.timeline if entry.stage is Stage.WATCH]
    assert [(entry.outcome, entry.details.get("replica")) for entry in watches] == [
        ("forbidden", "pod-a")
    ]


def test_without_events_a_standbys_forbidden_watch_is_a_warning_not_the_verdict() -> None:
    leader = _leading("synced")
    standby = _standing_by("forbidden", leader)
    verdict = _replicas(("pod-a", leader), ("pod-b", standby)).explain(kind="ConfigMap").verdict
    assert verdict.code is Code.NO_EVENTS
    assert "ConfigMap is watched and its cache synced" in verdict.message
    assert "(pod-a holds the leader lease; other replicas: pod-b: watch_forbidden)" in (
        verdict.message
    )
    assert [warning.code for warning in verdict.warnings] == [WarningCode.STANDBY_BLIND]
    warning = verdict.warnings[0]
    assert warning.message.startswith("standby pod-b cannot see this object's kind")
    assert "widget-controller cannot list configmaps" in warning.message
    assert "kubectl create clusterrole ctrltrace-configmaps" in warning.fix


def test_without_events_a_standby_still_on_its_first_list_is_not_called_blind() -> None:
    leader = _leading("synced")
    starting = _standing_by("listed", leader)  # a replica just started: nothing failed yet
    verdict = _replicas(("pod-a", leader), ("pod-b", starting)).explain(kind="ConfigMap").verdict
    assert verdict.code is Code.NO_EVENTS
    assert "other replicas: pod-b: cache_not_synced" in verdict.message
    assert verdict.warnings == ()


def test_a_reconciled_object_still_warns_of_a_standby_that_cannot_watch_its_kind() -> None:
    leader = RunStory()
    leader.lease("acquired", "pod-a")
    leader.reconciled(leader.event())
    standby = _standing_by("forbidden", leader)
    verdict = _replicas(("pod-a", leader), ("pod-b", standby)).explain().verdict
    assert verdict.code is Code.RECONCILED
    assert [warning.code for warning in verdict.warnings] == [WarningCode.STANDBY_BLIND]
    assert verdict.warnings[0].message.startswith("standby pod-b cannot see this object's kind")
    assert "kubectl create clusterrole ctrltrace-configmaps" in verdict.warnings[0].fix


def test_a_reconciled_object_gives_no_standby_warning_without_a_known_leader() -> None:
    first = RunStory()
    first.reconciled(first.event())
    refused = _watching(RunStory(synced=False, start=first.time + 0.005), "forbidden")
    verdict = _replicas(("pod-a", first), ("pod-b", refused)).explain().verdict
    assert verdict.code is Code.RECONCILED
    assert all(warning.code is not WarningCode.STANDBY_BLIND for warning in verdict.warnings)


def test_without_events_a_leader_that_lost_the_lease_still_answers_as_the_last_holder() -> None:
    leader = _leading("synced")
    leader.lease("lost", "", reason="renew deadline exceeded")
    standby = _standing_by("forbidden", leader)
    verdict = _replicas(("pod-a", leader), ("pod-b", standby)).explain(kind="ConfigMap").verdict
    assert verdict.code is Code.NO_EVENTS
    assert "(pod-a held the leader lease last;" in verdict.message
    assert {warning.code for warning in verdict.warnings} == {
        WarningCode.STANDBY_BLIND,
        WarningCode.LEASE_LOST,
    }


def test_without_events_and_without_lease_records_the_worst_replica_answers() -> None:
    synced = _watching(RunStory(synced=False), "synced")
    listing = RunStory(synced=False, start=START - 1.0)  # its records come first
    listing.watch("listed")
    listing.watch("disconnected", "connection refused")
    verdict = _replicas(("pod-a", synced), ("pod-b", listing)).explain(kind="ConfigMap").verdict
    assert verdict.code is Code.CACHE_NOT_SYNCED
    assert "the informer for ConfigMap has not finished its initial list" in verdict.message
    assert (
        "(pod-b: no lease record says which replica leads, so the replica whose watch fares "
        "worst answers; other replicas: pod-a: no_events)"
    ) in verdict.message
    assert verdict.details["replica"] == "pod-b"
    assert all(warning.code is not WarningCode.STANDBY_BLIND for warning in verdict.warnings)


def test_without_events_a_leader_without_watch_records_leaves_the_worst_replica_to_answer() -> None:
    leader = RunStory(synced=False)
    leader.lease("acquired", "pod-a")  # its watches' records are not in the evidence
    refused = _standing_by("forbidden", leader)
    synced = _standing_by("synced", refused)  # the latest watch record of all
    verdict = (
        _replicas(("pod-a", leader), ("pod-b", synced), ("pod-c", refused))
        .explain(kind="ConfigMap")
        .verdict
    )
    assert verdict.code is Code.WATCH_FORBIDDEN
    assert (
        "(pod-c: pod-a, which led, left no watch records, so the replica whose watch fares "
        "worst answers; other replicas: pod-b: no_events)"
    ) in verdict.message
    assert all(warning.code is not WarningCode.STANDBY_BLIND for warning in verdict.warnings)


@pytest.mark.parametrize("watch", ["synced", "forbidden"])
def test_without_events_one_named_replica_answers_as_a_journal_does(watch: str) -> None:
    alone = _leading(watch)
    named = _replicas(("pod-a", alone)).explain(kind="ConfigMap").verdict
    unnamed = alone.explain(kind="ConfigMap").verdict
    assert (named.code, named.message, named.fix) == (unnamed.code, unnamed.message, unnamed.fix)
    assert "replica" not in named.details


# -- only standbys saw the event ---------------------------------------------------------------


def test_a_leader_whose_watch_is_refused_answers_when_only_standbys_saw_the_event() -> None:
    leader = _leading("forbidden")
    standby = _standby(leader)
    standby.dispatch(standby.event())  # queued where no worker runs; the leader saw nothing
    explanation = _replicas(("pod-a", leader), ("pod-b", standby)).explain()
    verdict = explanation.verdict
    assert verdict.code is Code.WATCH_FORBIDDEN
    assert "widget-controller cannot list configmaps" in verdict.message
    assert (
        "(on pod-a, the leader, which so saw no event for shop/web; only pod-b, standing by, "
        "saw MODIFIED ConfigMap shop/web rv 101"
    ) in verdict.message
    assert "kubectl create clusterrole ctrltrace-configmaps" in verdict.fix
    assert verdict.details["replica"] == "pod-a"
    (standby_details,) = verdict.details["standbys"]
    assert (standby_details["replica"], standby_details["holder"]) == ("pod-b", "pod-a")
    watches = [entry for entry in explanation.timeline if entry.stage is Stage.WATCH]
    assert [(entry.outcome, entry.details.get("replica")) for entry in watches] == [
        ("forbidden", "pod-a")
    ]


def test_a_leader_still_listing_answers_when_only_standbys_saw_the_event() -> None:
    leader = _leading("listed")  # its first list has not finished
    standby = _standby(leader)
    standby.dispatch(standby.event())
    verdict = _replicas(("pod-a", leader), ("pod-b", standby)).explain().verdict
    assert verdict.code is Code.CACHE_NOT_SYNCED
    assert verdict.details["replica"] == "pod-a"
