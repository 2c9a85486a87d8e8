"""Options and values several commands share: the journal, where explain's evidence comes from,
durations and ``--since``, and the epilog of exit codes. Defined once, here."""

from __future__ import annotations

import contextlib
import datetime
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import click

from ctrltrace.cli.errors import CommandError, ExitCode

if TYPE_CHECKING:
    from ctrltrace.evidence import Opener

DEFAULT_JOURNAL = Path(".ctrltrace") / "journal.sqlite"
FC = TypeVar("FC", bound=Callable[..., object])
EPILOG = "Exit codes: " + ", ".join(f"{code.value} {code.name.lower()}" for code in ExitCode)


def journal_option(
    help_text: str = "The journal file (SQLite; also $CTRLTRACE_JOURNAL).",
) -> Callable[[FC], FC]:
    """``--journal PATH`` (also ``$CTRLTRACE_JOURNAL``), passed as ``journal_path``."""
    return click.option(
        "--journal",
        "journal_path",
        envvar="CTRLTRACE_JOURNAL",
        default=DEFAULT_JOURNAL,
        show_default=True,
        type=click.Path(dir_okay=False, path_type=Path),
        help=help_text,
    )


def journal_max_size_option() -> Callable[[FC], FC]:
    """``--journal-max-size MIB``, passed as ``journal_max_size``: run's limit, which
    ``manifests`` also sizes the journal's volume from."""
    return click.option(
        "--journal-max-size",
        default=256,
        show_default=True,
        type=click.IntRange(min=1),
        help="Keep the journal under this many MiB, dropping the oldest records.",
    )


@dataclass(frozen=True, slots=True)
class Source:
    """Where explain and the TUI read records from, not opened yet."""

    open: Opener
    label: str


def evidence_options(
    journal_help: str = "The journal file (SQLite; also $CTRLTRACE_JOURNAL).",
) -> Callable[[FC], FC]:
    """The options that say where the records come from (``--journal PATH``, ``--traces
    URL``, or ``--from URL`` with its credentials), passed to the command as one
    ``source: Source``."""

    def decorate(command: FC) -> FC:
        @functools.wraps(command)
        def with_source(
            *args: Any,
            journal_path: Path,
            traces_url: str | None,
            endpoint: EndpointAccess,
            **kwargs: Any,
        ) -> object:
            if endpoint.url is None:
                source = _source(journal_path, traces_url)
            elif traces_url is None:
                source = endpoint.source()
            else:
                raise CommandError("give --from or --traces, not both", ExitCode.USAGE)
            return command(*args, source=source, **kwargs)

        traces = click.option(
            "--traces",
            "traces_url",
            metavar="URL",
            help="Read the spans of every replica from this Jaeger query service (API v3, "
            "e.g. http://localhost:16686) instead of a journal; --since sets the window "
            "(default: the last hour).",
        )
        return journal_option(journal_help)(traces(_endpoint_options(cast(FC, with_source))))

    return decorate


@dataclass(frozen=True, slots=True)
class EndpointAccess:
    """``--from URL`` and how to get in: a manager's debug endpoint instead of the journal."""

    url: str | None
    token: str | None
    token_file: Path | None
    certificate_authority: Path | None
    insecure: bool

    def source(self) -> Source:
        from ctrltrace.evidence.endpoint import EndpointEvidence

        assert self.url is not None
        if self.token is not None and self.token_file is not None:
            raise CommandError("give --token or --token-file, not both", ExitCode.USAGE)
        token = self.token
        if self.token_file is not None:
            try:
                token = self.token_file.read_text().strip()
            except (OSError, UnicodeDecodeError) as error:
                reason = getattr(error, "strerror", None) or error
                raise CommandError(
                    f"cannot read --token-file {self.token_file}: {reason}", ExitCode.USAGE
                ) from None
        opener = functools.partial(
            EndpointEvidence,
            self.url,
            token=token,
            certificate_authority=self.certificate_authority,
            insecure=self.insecure,
        )
        try:
            evidence = opener()  # checks the URL; nothing is sent until a query
        except ValueError as error:
            raise CommandError(str(error), ExitCode.USAGE) from None

        def open_checked() -> EndpointEvidence:
            return opener().checked()  # as a journal's opening would, fails on a wrong source

        return Source(open_checked, evidence.label)


def _endpoint_options(command: FC) -> FC:
    """``--from URL`` with ``--token``/``--token-file`` and the TLS options, passed to the
    command as one ``endpoint: EndpointAccess``."""

    @functools.wraps(command)
    def with_endpoint(
        *args: Any,
        endpoint_url: str | None,
        token: str | None,
        token_file: Path | None,
        certificate_authority: Path | None,
        insecure_skip_tls_verify: bool,
        **kwargs: Any,
    ) -> object:
        access = EndpointAccess(
            endpoint_url, token, token_file, certificate_authority, insecure_skip_tls_verify
        )
        if endpoint_url is None and (token or token_file or certificate_authority):
            raise CommandError(
                "--token, --token-file and --certificate-authority go with --from URL",
                ExitCode.USAGE,
            )
        return command(*args, endpoint=access, **kwargs)

    options = [
        click.option(
            "--from",
            "endpoint_url",
            metavar="URL",
            help="Read a running manager's debug endpoint instead of the journal "
            "(kubectl port-forward deploy/NAME 8082, then http://127.0.0.1:8082).",
        ),
        click.option(
            "--token", help="Bearer token for --from (an endpoint off loopback asks for one)."
        ),
        click.option(
            "--token-file",
            type=click.Path(dir_okay=False, path_type=Path),
            help="Read the bearer token for --from from this file.",
        ),
        click.option(
            "--certificate-authority",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            help="PEM file (a CA, or the certificate itself) to verify an https --from endpoint "
            "with.",
        ),
        click.option(
            "--insecure-skip-tls-verify",
            is_flag=True,
            help="Do not verify an https --from endpoint's certificate.",
        ),
    ]
    decorated = cast(FC, with_endpoint)
    for option in reversed(options):
        decorated = option(decorated)
    return decorated


def _source(journal_path: Path, traces_url: str | None) -> Source:
    if traces_url is not None:
        from ctrltrace.evidence.traces import TraceEvidence

        def open_checked() -> TraceEvidence:
            return TraceEvidence(traces_url).checked()  # fails at once on a wrong source

        return Source(open_checked, f"traces at {traces_url}")
    from ctrltrace.journal import Journal  # only the commands that read it pay for it

    return Source(functools.partial(Journal, journal_path), f"journal {journal_path}")


@contextlib.contextmanager
def evidence_errors() -> Iterator[None]:
    """Turn a source's failure into the CLI's one-line error with its exit code."""
    from ctrltrace.evidence import EvidenceError, EvidenceRefused, EvidenceUnreachable
    from ctrltrace.journal import JournalError

    try:
        yield
    except JournalError as error:
        raise CommandError(str(error), ExitCode.JOURNAL) from error
    except EvidenceUnreachable as error:
        raise CommandError(str(error), ExitCode.UNREACHABLE) from error
    except EvidenceRefused as error:
        raise CommandError(str(error), ExitCode.ENVIRONMENT) from error
    except EvidenceError as error:  # unreadable: what the journal's code says for a journal
        raise CommandError(str(error), ExitCode.JOURNAL) from error


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``90``, ``30s``, ``10m``, ``2h`` or ``1d`` as seconds."""
    number, unit = (text[:-1], text[-1]) if text[-1:] in _UNITS else (text, "s")
    try:
        return float(number) * _UNITS[unit]
    except ValueError:
        raise CommandError(
            f"{text!r} is not a duration (like 30s, 10m, 2h, 1d)", ExitCode.USAGE
        ) from None


def parse_since(text: str | None, now: float) -> float | None:
    """A ``--since`` value: a duration back from now, or an ISO 8601 time."""
    if text is None:
        return None
    if text[-1:] in _UNITS or text.replace(".", "", 1).isdigit():
        return now - parse_duration(text)
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise CommandError(
            f"--since {text!r}: expected a duration (10m) or a time (2026-01-02T15:04:05)",
            ExitCode.USAGE,
        ) from None
    if moment.tzinfo is None:
        moment = moment.astimezone()
    return moment.timestamp()
