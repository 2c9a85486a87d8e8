"""Kubernetes' sample-controller, ported to ctrltrace with its public API only.

A ``Foo`` (``samplecontroller.k8s.io/v1alpha1``, CRD in ``examples/foo-crd.json``) asks for a
Deployment named ``spec.deploymentName`` running ``spec.replicas`` nginx Pods. As
k8s.io/sample-controller's ``syncHandler`` does, each reconcile:

1. reads the Foo (gone: nothing to do; its Deployment goes with it, by owner reference);
2. creates the Deployment, controlled by the Foo, if it does not exist;
3. refuses a Deployment of that name that the Foo does not control: a Warning Event
   ``ErrResourceExists`` on the Foo, and an error (retried with back-off);
4. brings the Deployment's replicas to the Foo's;
5. copies the Deployment's ``status.availableReplicas`` into the Foo's status;
6. emits a Normal Event ``Synced`` on the Foo.

``owns("apps/v1", "Deployment")`` reconciles the Foo whenever its Deployment changes, so
the status follows the Deployment's.

    ctrltrace run examples/samplecontroller.py:mgr
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import ctrltrace as ct

API_VERSION = "samplecontroller.k8s.io/v1alpha1"
# The messages sample-controller's Events carry.
MESSAGE_RESOURCE_EXISTS = "Resource {name!r} already exists and is not managed by Foo"
MESSAGE_SYNCED = "Foo synced successfully"


def new_deployment(foo: Mapping[str, Any]) -> dict[str, Any]:
    """The Deployment a Foo asks for (sample-controller's ``newDeployment``)."""
    labels = {"app": "nginx", "controller": foo["metadata"]["name"]}
    deployment: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": foo["spec"]["deploymentName"],
            "namespace": foo["metadata"]["namespace"],
        },
        "spec": {
            "replicas": foo["spec"].get("replicas", 1),
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "nginx", "image": "nginx:latest"}]},
            },
        },
    }
    ct.set_controller_reference(foo, deployment)
    return deployment


async def reconcile(ctx: ct.Context, req: ct.Request) -> None:
    try:
        foo = await ctx.client.get(API_VERSION, "Foo", req.name, req.namespace)
    except ct.NotFound:
        return  # deleted; its Deployment is garbage-collected with it
    name = (foo.get("spec") or {}).get("deploymentName")
    if not name:
        # Retrying cannot help until the Foo changes, and a change reconciles it anyway.
        raise ct.TerminalError(f"{req.key}: spec.deploymentName must be specified")
    try:
        deployment = await ctx.client.get("apps/v1", "Deployment", name, req.namespace)
    except ct.NotFound:
        deployment = await ctx.client.create(new_deployment(foo))
    if not ct.is_controlled_by(deployment, foo):
        message = MESSAGE_RESOURCE_EXISTS.format(name=name)
        ctx.events.warning(foo, "ErrResourceExists", message)
        raise RuntimeError(message)
    replicas = foo["spec"].get("replicas")
    if replicas is not None and replicas != deployment["spec"].get("replicas"):
        ctx.log.info("scaling", deployment=name, replicas=replicas)
        deployment["spec"]["replicas"] = replicas  # our own copy: the cache is untouched
        deployment = await ctx.client.update(deployment)
    available = (deployment.get("status") or {}).get("availableReplicas", 0)
    if (foo.get("status") or {}).get("availableReplicas") != available:
        foo["status"] = {"availableReplicas": available}
        await ctx.client.update_status(foo)
    ctx.events.normal(foo, "Synced", MESSAGE_SYNCED)


def make_manager(**options: Any) -> ct.Manager:
    """The manager with the Foo controller; ``options`` go to ``ct.Manager``."""
    manager = ct.Manager(name="sample-controller", **options)
    (
        manager.controller()
        .for_(API_VERSION, "Foo")
        .owns("apps/v1", "Deployment")
        .writes("apps", "deployments", ["create", "update"])
        .writes("samplecontroller.k8s.io", "foos/status", ["update"])
        .complete(reconcile)
    )
    return manager


mgr = make_manager()
