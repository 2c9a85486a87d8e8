"""Log set-up for ``ctrltrace run``: structlog, as JSON or for a console, at a chosen level.

Owns the processor chain. Reconcile loggers are bound to controller, namespace, name and
reconcile_id by the controller; this module only decides how lines look.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import structlog

from ctrltrace.printable import printable


def configure(
    log_format: str = "console",
    verbose: int = 0,
    enrich: Sequence[structlog.typing.Processor] = (),
    log_file: Path | None = None,
) -> None:
    """``enrich`` runs before rendering (e.g. adding trace ids to reconcile logs). Call this
    before any logger is used: structlog caches loggers with the processors of their time."""
    level = logging.DEBUG if verbose else logging.INFO
    # JSON escapes control characters itself; console lines need them escaped first.
    rendering: list[structlog.typing.Processor] = (
        [structlog.processors.JSONRenderer()]
        if log_format == "json"
        else [
            _printable_values,
            structlog.dev.ConsoleRenderer(colors=log_file is None and sys.stderr.isatty()),
        ]
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            *enrich,
            *rendering,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(_target(log_file)),
        cache_logger_on_first_use=True,
    )


def _printable_values(
    logger: object, method: str, event: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """Every text value with its control characters escaped: an API error or an exception's
    message must not reach the terminal as an escape sequence (a traceback keeps its lines)."""
    return {
        key: printable(value, newlines=key == "exception") if isinstance(value, str) else value
        for key, value in event.items()
    }


def _target(log_file: Path | None) -> TextIO:
    if log_file is None:
        return sys.stderr
    log_file.parent.mkdir(parents=True, exist_ok=True)
    # Line-buffered and open for the life of the process, like stderr.
    return log_file.open("a", buffering=1)
