"""The Grafana dashboard queries only metrics that ctrltrace exposes."""

from __future__ import annotations

import json
import re
from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider
from prometheus_client.parser import text_string_to_metric_families

from ctrltrace import FakeClock, ObjectRef, Record, Recorder, Stage
from ctrltrace.controller import Controller
from ctrltrace.exporters.prometheus import PrometheusSink
from ctrltrace.exporters.tracing import DropCounter

DASHBOARD = Path(__file__).parents[2] / "exporters" / "dashboards" / "ctrltrace.json"
_FUNCTIONS = {"sum", "by", "rate", "histogram_quantile", "max", "le"}


def _exposed() -> set[str]:
    async def reconcile(ctx: object, request: object) -> None:
        return None

    controller = Controller("c", reconcile, recorder=Recorder(), clock=FakeClock())
    sink = PrometheusSink(lambda: [controller])
    provider = TracerProvider()
    sink.registry.register(DropCounter(provider))
    ref = ObjectRef("v1", "ConfigMap", "ns", "a")
    for record in (
        Record(1.0, Stage.CONTROLLER, "started", controller="c",
               attrs={"max_concurrent_reconciles": 1}),
        Record(1.0, Stage.RECONCILE, "success", controller="c", request="ns/a", object=ref,
               attrs={"duration_s": 0.1, "metric_result": "success"}),
        Record(1.0, Stage.LEASE, "acquired",
               attrs={"lease": "ns/l", "identity": "me", "holder": "me"}),
    ):  # fmt: skip
        sink(record)
    names: set[str] = set()
    for family in text_string_to_metric_families(sink.render().decode()):
        names.update(sample.name for sample in family.samples)
    provider.shutdown()
    return names


def test_every_metric_the_dashboard_queries_is_exposed() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    queried = {
        word
        for panel in dashboard["panels"]
        for target in panel["targets"]
        # Label names only appear in "by (...)", durations in "[...]"; the rest are functions
        # and metric names.
        for word in re.findall(r"[a-z_]+", re.sub(r"by \([^)]*\)|\[[^]]*\]", "", target["expr"]))
        if word not in _FUNCTIONS
    }
    assert queried, "the dashboard queries nothing"
    missing = queried - _exposed()
    assert not missing, f"the dashboard queries metrics ctrltrace does not expose: {missing}"
