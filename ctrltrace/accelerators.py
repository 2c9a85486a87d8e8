"""ctrltrace's optional C accelerators: whether they may be used, and which are in use.

Owns the switch: two hot paths (the journal's record pickler, ``ctrltrace._picklerecords``,
and the OTLP span encoder, ``ctrltrace.exporters._otlpwire``) have a C extension, compiled
when pip installs ctrltrace on a machine with a C compiler and skipped without one. Each has a
pure-Python twin that writes the same bytes; the module that owns the path takes the extension
when it can be imported and ``CTRLTRACE_NO_ACCELERATORS`` is not set, else the twin.

``ctrltrace --version`` prints which path each uses.

It may not import what it reports on at import time (the exporters load it themselves).
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

__all__ = ["DISABLE", "enabled", "load", "report"]

DISABLE = "CTRLTRACE_NO_ACCELERATORS"
"""Set to anything but "" or "0" to use the pure-Python paths even where the C ones exist."""

# (module that chooses, what it is, the C extension it may use)
_PATHS = (
    ("ctrltrace.picklerecords", "journal record pickler", "ctrltrace._picklerecords"),
    ("ctrltrace.exporters.otlpwire", "OTLP span encoder", "ctrltrace.exporters._otlpwire"),
)


def enabled() -> bool:
    """Whether the C accelerators may be used (``CTRLTRACE_NO_ACCELERATORS`` is not set)."""
    return os.environ.get(DISABLE, "").strip() in ("", "0")


def load(name: str) -> ModuleType | None:
    """The C extension ``name``, or None when it is disabled or was not built."""
    if not enabled():
        return None
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def report() -> list[str]:
    """One line per accelerated path: which implementation is in use, and why."""
    lines = []
    for chooser, what, extension in _PATHS:
        accelerated = bool(importlib.import_module(chooser).ACCELERATED)
        if accelerated:
            how = f"C ({extension})"
        elif not enabled():
            how = f"pure Python ({DISABLE} is set)"
        else:
            how = f"pure Python ({extension} was not built)"
        lines.append(f"{what}: {how}")
    return lines
