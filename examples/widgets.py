"""A small, complete controller: each Widget gets a ConfigMap with its spec in it.

Its CRD is ``examples/widget-crd.json``; ``scripts/demo`` installs it on a local control
plane, runs this controller under ``ctrltrace run`` and explains what happened.

What it shows: GenerationChanged drops label-only edits of a Widget; a Widget whose
spec.fail is "once" fails its first reconcile and succeeds on the retry; the owned
ConfigMap maps back to its Widget through its controller owner reference.
"""

from __future__ import annotations

import ctrltrace as ct
from ctrltrace import predicates

mgr = ct.Manager(name="widgets", leader_election_id="widgets.example.com")
_failed_once: set[str] = set()

# The writes reconcile makes, for `ctrltrace rbac` and `ctrltrace doctor`.
RBAC_WRITES = [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create", "patch"]}]


async def reconcile(ctx: ct.Context, req: ct.Request) -> ct.Result | None:
    try:
        widget = await ctx.client.get("example.com/v1", "Widget", req.name, req.namespace)
    except ct.NotFound:
        return None  # deleted; its ConfigMap goes with it (owner reference)
    spec = widget.get("spec") or {}
    if spec.get("fail") == "once" and req.key not in _failed_once:
        _failed_once.add(req.key)
        raise RuntimeError("simulated failure (spec.fail=once): the retry will succeed")
    ctx.log.info("reconciling", replicas=spec.get("replicas"))
    desired = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": f"{req.name}-config",
            "namespace": req.namespace,
            "ownerReferences": [
                {
                    "apiVersion": "example.com/v1",
                    "kind": "Widget",
                    "name": req.name,
                    "uid": widget["metadata"]["uid"],
                    "controller": True,
                }
            ],
        },
        "data": {"replicas": str(spec.get("replicas", 1))},
    }
    try:
        current = await ctx.client.get("v1", "ConfigMap", f"{req.name}-config", req.namespace)
    except ct.NotFound:
        await ctx.client.create(desired)
        return ct.Result(requeue_after=300)
    if current.get("data") != desired["data"]:
        await ctx.client.patch(
            "v1",
            "ConfigMap",
            f"{req.name}-config",
            {"data": desired["data"]},
            namespace=req.namespace,
        )
    return ct.Result(requeue_after=300)


(
    mgr.controller()
    .for_("example.com/v1", "Widget", predicates.GenerationChanged())
    .owns("v1", "ConfigMap")
    .named("widget")
    .with_options(max_concurrent_reconciles=2)
    .complete(reconcile)
)
