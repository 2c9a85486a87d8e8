"""A ctrltrace controller with a no-op reconcile over ConfigMaps: the benchmark's ctrltrace app.

    ctrltrace run bench.apps.ctrltrace_noop:mgr --namespace NS --journal PATH …  # (b), (c)
    python -m bench.apps.ctrltrace_noop --kubeconfig PATH --namespace NS        # (a)

The reconcile reads its object from the cache, as a real one would, and logs the version it
saw to the handled log. Run as a module it starts the same manager with no sink at all (not
even the journal, which ``ctrltrace run`` always attaches): configuration (a).
"""

from __future__ import annotations

import argparse
import time

import ctrltrace as ct
from bench.apps._handled import HandledLog

mgr = ct.Manager(name="bench-noop", metrics_bind_address="0", health_probe_bind_address="0")
handled = HandledLog.from_env()


async def reconcile(ctx: ct.Context, req: ct.Request) -> None:
    started = time.time()
    try:
        obj = await ctx.client.get("v1", "ConfigMap", req.name, req.namespace)
    except ct.NotFound:
        return
    handled(started, obj)


mgr.controller().for_("v1", "ConfigMap").named("noop").complete(reconcile)


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the no-op manager with no sinks.")
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--namespace", required=True)
    args = parser.parse_args()
    mgr.options.kubeconfig = args.kubeconfig
    mgr.options.namespaces = (args.namespace,)
    mgr.run()


if __name__ == "__main__":
    main()
