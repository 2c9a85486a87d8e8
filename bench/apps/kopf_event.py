"""kopf's closest match to a no-op reconcile without state: one ``on.event`` handler.

    KUBECONFIG=PATH kopf run --standalone --quiet --namespace NS -m bench.apps.kopf_event

kopf calls it for every watch event (including the initial listing); nothing is stored on the
objects.
"""

from __future__ import annotations

from typing import Any

import kopf

from bench.apps._kopf import handled


@kopf.on.event("v1", "configmaps")
async def on_event(body: kopf.Body, type: str | None, **_: Any) -> None:  # kopf names it `type`
    if type != "DELETED":
        handled(body)
