"""kopf in its normal mode: ``on.create`` and ``on.update`` handlers with state.

    KUBECONFIG=PATH kopf run --standalone --quiet --namespace NS -m bench.apps.kopf_normal

kopf compares each version with the last one it handled (kept in the object's
``kopf.zalando.org/last-handled-configuration`` annotation), calls the matching handler and
then patches that annotation: one extra write, and one extra watch event, per change handled.
That is kopf's real cost in this mode and is kept.
"""

from __future__ import annotations

from typing import Any

import kopf

from bench.apps._kopf import handled


@kopf.on.create("v1", "configmaps")
async def on_create(body: kopf.Body, **_: Any) -> None:
    handled(body)


@kopf.on.update("v1", "configmaps")
async def on_update(body: kopf.Body, **_: Any) -> None:
    handled(body)
