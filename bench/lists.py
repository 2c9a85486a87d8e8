"""How often an informer lists when its watch keeps being refused: the load a controller puts on
the API server while one of its identities may list a kind but not watch it.

Starts a local control plane, mints an identity that may get and list ConfigMaps in one
namespace but not watch them, runs a manager with one ConfigMap controller as that identity
for ``--seconds``, and counts the LIST requests its transport sent (a GET with ``limit``).
Prints the count and the lists per minute. client-go's back-off (0.8 s doubling to 30 s) makes
about 7 in the first minute, then 2 a minute.

    python -m bench.lists [--seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Mapping
from typing import Any

from ctrltrace import Context, Manager, Request
from ctrltrace.envtest import ControlPlane
from ctrltrace.logs import configure
from ctrltrace.transport import Json, Transport, load_configuration

NAMESPACE = "bench-lists"


class CountingTransport(Transport):
    """The real transport, counting the list requests it sends."""

    lists = 0

    async def request(
        self, method: str, path: str, *, params: Mapping[str, str] | None = None, **rest: Any
    ) -> Json:
        if method == "GET" and params is not None and "limit" in params:
            self.lists += 1
        return await super().request(method, path, params=params, **rest)


async def _noop(ctx: Context, request: Request) -> None:
    return None


async def _count(kubeconfig: str, seconds: float) -> int:
    transport = CountingTransport(await load_configuration(kubeconfig))
    manager = Manager(namespaces=[NAMESPACE], health_probe_bind_address="0")
    manager.controller().for_("v1", "ConfigMap").complete(_noop)
    running = asyncio.create_task(manager.start(transport))
    await asyncio.sleep(seconds)
    manager.stop()
    await asyncio.wait_for(running, 30)
    await transport.close()
    return transport.lists


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the manager runs")
    args = parser.parse_args()
    configure()  # the runtime's own lines at info, on stderr: its warning says why it lists
    with ControlPlane() as plane:
        plane.request("POST", "/api/v1/namespaces", {"metadata": {"name": NAMESPACE}})
        lister = plane.mint_identity(
            "bench-lister",
            [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}],
            namespace=NAMESPACE,
        )
        lists = asyncio.run(_count(str(lister.kubeconfig), args.seconds))
    per_minute = lists * 60 / args.seconds
    print(f"LIST requests in {args.seconds:g} s, watch forbidden: {lists} ({per_minute:.1f}/min)")


if __name__ == "__main__":
    main()
