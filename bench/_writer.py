"""The load generator of bench.controlplane, in its own process so it does not share a core.

    python -m bench._writer KUBECONFIG NAMESPACE COUNT create|update PAYLOAD_BYTES

Creates (or updates once) ConfigMaps cm-0 … cm-COUNT-1 with 32 requests in flight.
"""

from __future__ import annotations

import asyncio
import sys

from ctrltrace.transport import Transport, load_configuration

_IN_FLIGHT = 32


async def _write(kubeconfig: str, namespace: str, count: int, verb: str, size: int) -> None:
    transport = Transport(await load_configuration(kubeconfig))
    base = f"/api/v1/namespaces/{namespace}/configmaps"
    names = iter(range(count))

    async def worker() -> None:
        for i in names:
            if verb == "create":
                body = {"metadata": {"name": f"cm-{i}"}, "data": {"payload": "x" * size}}
                await transport.request("POST", base, body=body)
            else:
                await transport.request(
                    "PATCH",
                    f"{base}/cm-{i}",
                    body={"data": {"updated": "yes"}},
                    content_type="application/merge-patch+json",
                )

    try:
        await asyncio.gather(*(worker() for _ in range(_IN_FLIGHT)))
    finally:
        await transport.close()


if __name__ == "__main__":
    kubeconfig, namespace, count, verb, size = sys.argv[1:6]
    asyncio.run(_write(kubeconfig, namespace, int(count), verb, int(size)))
