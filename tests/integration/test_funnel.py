"""The funnel of a real controller that loses events at three stages (issue 19).

One controller, for_(Widget) with GenerationChanged, owns(ConfigMap) and owns(Secret), runs
as an identity that may not list Secrets. A label edit of a Widget is dropped by the predicate,
a ConfigMap without a controller owner maps to nothing, and the Widget that got through waits
behind the forbidden watch. ``explain --funnel --json`` and the TUI's funnel, both from the
real journal, show the three drops with their counts and reasons.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import Callable

from click.testing import CliRunner

from ctrltrace import Context, Manager, Request, Stage, predicates
from ctrltrace.cli import main as cli_main
from ctrltrace.envtest import ControlPlane
from ctrltrace.envtest.pytest_plugin import MintIdentity
from ctrltrace.journal import Journal, JournalWriter
from ctrltrace.tui import funnel_cells
from ctrltrace.tui.feed import replay

from . import test_verdicts as base
from .conftest import start, stop, widget

ManagerFactory = Callable[..., Manager]
journal = base.journal  # the fixture: a JournalWriter on a fresh file


async def _noop(ctx: Context, request: Request) -> None:
    return None


def test_the_funnel_shows_a_predicate_an_unmapped_child_and_a_forbidden_watch(
    control_plane: ControlPlane,
    kube_namespace: str,
    manager_factory: ManagerFactory,
    mint_identity: MintIdentity,
    widget_crd: str,
    journal: JournalWriter,
) -> None:
    readable = (("example.com", "widgets"), ("", "configmaps"))  # and not secrets
    identity = mint_identity(
        [
            {"apiGroups": [group], "resources": [resource], "verbs": ["get", "list", "watch"]}
            for group, resource in readable
        ],
        namespace=kube_namespace,
    )
    widgets = f"/apis/example.com/v1/namespaces/{kube_namespace}/widgets"

    async def scenario() -> None:
        mgr = manager_factory(namespaces=[kube_namespace], kubeconfig=str(identity.kubeconfig))
        mgr.add_sink(journal)
        (
            mgr.controller()
            .named("shop")
            .for_(widget_crd, "Widget", predicates.GenerationChanged())
            .owns("v1", "ConfigMap")
            .owns("v1", "Secret")
            .complete(_noop)
        )
        run = await start(mgr)
        await run.until(lambda: bool(run.records.where(Stage.WATCH, "forbidden")))
        await run.until(lambda: len(run.records.where(Stage.WATCH, "synced")) >= 2)
        control_plane.request("POST", widgets, widget(kube_namespace, "kept"))
        await run.until(lambda: bool(run.records.where(Stage.DISPATCH, "queued")))
        control_plane.request(
            "PATCH",
            f"{widgets}/kept",
            {"metadata": {"labels": {"tier": "gold"}}},
            content_type="application/merge-patch+json",
        )
        await run.until(lambda: bool(run.records.where(Stage.DISPATCH, "dropped_by_predicate")))
        control_plane.request(
            "POST",
            f"/api/v1/namespaces/{kube_namespace}/configmaps",
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "loose"}},
        )
        await run.until(lambda: bool(run.records.where(Stage.DISPATCH, "not_mapped")))
        await stop(run)

    asyncio.run(scenario())
    assert journal.flush()
    blocked = "blocked by unsynced watch Secret forbidden (403)"
    expected = [
        ("seen", "dropped_by_predicate", "GenerationChanged", 1, [f"{kube_namespace}/kept"]),
        ("passed", "not_mapped", None, 1, [f"{kube_namespace}/loose"]),
        ("enqueued", "blocked", blocked, 1, [f"{kube_namespace}/kept"]),
    ]

    result = CliRunner().invoke(
        cli_main,
        ["explain", "--controller", "shop", "--funnel", "--json", "--journal", str(journal.path)],
    )
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    drops = [
        (
            drop["after"],
            drop["loss"],
            drop["reason"] if drop["loss"] != "not_mapped" else None,
            drop["count"],
            [f"{lost['namespace']}/{lost['name']}" for lost in drop["objects"]],
        )
        for drop in answer["drops"]
    ]
    assert drops == expected
    (unmapped,) = [drop for drop in answer["drops"] if drop["loss"] == "not_mapped"]
    assert "controller" in unmapped["reason"]  # no controller owner to enqueue
    assert [stage["count"] for stage in answer["stages"]] == [3, 2, 1, 1, 0]

    # The TUI's funnel, replayed from the same journal, shows the same three rows.
    state = replay(functools.partial(Journal, journal.path), time.time())
    assert state is not None
    funnel = state.funnel.funnel("shop")
    assert funnel is not None
    rows = {key: [cell.plain for cell in row] for key, row in funnel_cells.funnel_rows(funnel)}
    assert rows["drop", "dropped_by_predicate", "GenerationChanged"][:2] == [
        "  ✗ dropped by predicate",
        "-1",
    ]
    assert rows["drop", "blocked", blocked][1:2] == ["-1"]
    assert [row[1] for key, row in rows.items() if key[:2] == ("drop", "not_mapped")] == ["-1"]
