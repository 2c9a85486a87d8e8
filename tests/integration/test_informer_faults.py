"""The informer against a real API server that refuses its watch, cuts its connections and
compacts the history it would resume from: how often it lists, and from where it resumes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from ctrltrace import Collect, Context, Manager, Request, Stage
from ctrltrace.controller import Controller, ControllerFailed
from ctrltrace.envtest import ControlPlane, FaultProxy
from ctrltrace.envtest.pytest_plugin import MintIdentity
from ctrltrace.transport import Json, Transport, load_configuration


class CountingTransport(Transport):
    """The real transport, noting every list (a GET with ``limit``) and watch it makes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lists: list[dict[str, str]] = []
        self.watches: list[dict[str, str]] = []
        self.opened = 0  # watches the API server answered: streams a reset can cut

    async def request(
        self, method: str, path: str, *, params: Mapping[str, str] | None = None, **rest: Any
    ) -> Json:
        if method == "GET" and params is not None and "limit" in params:
            self.lists.append(dict(params))
        return await super().request(method, path, params=params, **rest)

    async def watch(
        self,
        path: str,
        params: Mapping[str, str],
        opened: Callable[[], None] | None = None,
        **rest: Any,
    ) -> AsyncIterator[Json]:
        self.watches.append(dict(params))

        def answered() -> None:
            self.opened += 1
            if opened is not None:
                opened()

        async for event in super().watch(path, params, answered, **rest):
            yield event


async def until(condition: Callable[[], bool], records: Collect, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            tail = "\n".join(f"{r.stage} {r.outcome} {r.reason}" for r in records.records[-30:])
            raise AssertionError(f"condition not met; records:\n{tail}")
        await asyncio.sleep(0.05)


async def _noop(ctx: Context, request: Request) -> None:
    return None


def test_an_identity_that_may_list_but_not_watch_lists_at_most_8_times_a_minute(
    kube_namespace: str, mint_identity: MintIdentity
) -> None:
    identity = mint_identity(
        [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}],
        namespace=kube_namespace,
    )
    records = Collect()

    async def scenario() -> CountingTransport:
        transport = CountingTransport(await load_configuration(str(identity.kubeconfig)))
        mgr = Manager(namespaces=[kube_namespace], health_probe_bind_address="0")
        mgr.controller().for_("v1", "ConfigMap").complete(_noop)
        mgr.add_sink(records)
        running = asyncio.create_task(mgr.start(transport))
        await asyncio.sleep(60)
        mgr.stop()
        await asyncio.wait_for(running, 30)
        await transport.close()
        return transport

    transport = asyncio.run(scenario())
    lists = transport.lists
    # Back-off 0.8 s doubling, not reset by the lists that succeed: 7 in a minute (was ~70).
    assert 4 <= len(lists) <= 8, lists
    assert "resourceVersion" not in lists[0]
    assert all(params["resourceVersionMatch"] == "NotOlderThan" for params in lists[1:])
    refused = records.where(Stage.WATCH, "forbidden")
    assert len(refused) == len(lists) and "cannot watch" in refused[0].reason


def test_cut_connections_resume_the_watch_and_only_410_lists_again(
    control_plane: ControlPlane, kube_namespace: str, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    via_proxy = control_plane.admin_kubeconfig_via(
        f"https://{fault_proxy.address}", tmp_path / "via-proxy.kubeconfig"
    )
    path = f"/api/v1/namespaces/{kube_namespace}/podtemplates"
    reconciled: set[str] = set()
    records = Collect()

    async def reconcile(ctx: Context, request: Request) -> None:
        reconciled.add(request.name)

    def create(name: str) -> str:
        container = {"name": "c", "image": "busybox"}
        template = {"metadata": {"name": name}, "template": {"spec": {"containers": [container]}}}
        created: dict[str, Any] = control_plane.request("POST", path, template)
        return str(created["metadata"]["resourceVersion"])

    async def scenario() -> CountingTransport:
        transport = CountingTransport(await load_configuration(str(via_proxy)))
        # PodTemplates are served from etcd, not the watch cache: compaction reaches the watch.
        mgr = Manager(namespaces=[kube_namespace], health_probe_bind_address="0")
        mgr.controller().for_("v1", "PodTemplate").complete(reconcile)
        mgr.add_sink(records)
        running = asyncio.create_task(mgr.start(transport))
        create("a")
        await until(lambda: "a" in reconciled, records)

        # (1) Every connection reset, three times, with writes in between.
        def count(outcome: str) -> Callable[[], int]:
            return lambda: len(records.where(Stage.WATCH, outcome))

        disconnected, resumed = count("disconnected"), count("resumed")
        for cut, name in enumerate(("b", "c", "d"), start=1):
            # Cut only once this round's watch is open: a reset before it cuts no stream.
            await until(lambda cut=cut: transport.opened == cut, records)  # type: ignore[misc]
            assert fault_proxy.reset() >= 1
            await until(lambda cut=cut: disconnected() == cut, records)  # type: ignore[misc]
            create(name)
            await until(lambda name=name: name in reconciled, records)  # type: ignore[misc]
            assert resumed() == cut
        assert len(transport.lists) == 1  # resumed each time, never listed again
        # Each watch resumes from the newest version it had seen, never from an older one.
        versions = [int(watch["resourceVersion"]) for watch in transport.watches]
        assert len(versions) == 4 and versions == sorted(versions) and versions[-1] > versions[0]

        # (2) Unreachable while writes go on and etcd is compacted past the watch's version.
        with fault_proxy.refusing():
            await until(lambda: disconnected() > 3, records)
            create("e")
            latest = create("f")
            control_plane.compact(latest)
        await until(lambda: {"e", "f"} <= reconciled, records)
        mgr.stop()
        await asyncio.wait_for(running, 30)
        await transport.close()
        return transport

    transport = asyncio.run(scenario())
    gone = records.where(Stage.WATCH, "gone")
    assert len(gone) == 1
    # 410: one list more, a consistent read (no resourceVersion: the old one is gone).
    assert len(transport.lists) == 2 and "resourceVersion" not in transport.lists[1]
    assert reconciled == {"a", "b", "c", "d", "e", "f"}


def test_a_controller_whose_workers_die_stops_the_manager_loudly(
    control_plane: ControlPlane, kube_namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def dying_worker(self: Controller, client: object) -> None:
        await self.queue.get()
        raise RuntimeError("worker broke")

    monkeypatch.setattr(Controller, "_worker", dying_worker)
    records = Collect()

    async def scenario() -> None:
        mgr = Manager(
            namespaces=[kube_namespace],
            kubeconfig=str(control_plane.kubeconfig),
            health_probe_bind_address="0",
        )
        mgr.controller().for_("v1", "ConfigMap").named("doomed").complete(_noop)
        mgr.add_sink(records)
        control_plane.request(
            "POST", f"/api/v1/namespaces/{kube_namespace}/configmaps", {"metadata": {"name": "x"}}
        )
        with pytest.raises(ControllerFailed) as failed:
            await asyncio.wait_for(mgr.start(), 30)
        assert failed.value.controller == "doomed"
        assert "RuntimeError: worker broke" in str(failed.value)

    asyncio.run(scenario())
    (failure,) = records.where(Stage.CONTROLLER, "failed")
    assert failure.controller == "doomed" and "worker broke" in failure.reason
    stopped = records.where(Stage.MANAGER, "stopped")
    assert len(stopped) == 1 and "worker broke" in stopped[0].reason
