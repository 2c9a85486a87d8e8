"""What both kopf apps share: their operator settings and the handler body.

Importing this module registers a startup handler in kopf's default registry. It turns off
posting Kubernetes Events (kopf posts one per handler outcome by default): ctrltrace posts none,
and at these rates the extra API writes would load the shared API server for both frameworks.
Everything else keeps kopf's defaults, including its progress and diff-base annotations.
"""

from __future__ import annotations

import time
from typing import Any

import kopf

from bench.apps._handled import HandledLog

handled_log = HandledLog.from_env()


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.posting.enabled = False


def handled(body: kopf.Body) -> None:
    handled_log(time.time(), body)
