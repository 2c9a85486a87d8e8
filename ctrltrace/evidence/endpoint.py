"""Evidence read from a running manager's debug endpoint (``explain --from URL``, ``tui --from``).

Owns the client side of ``ctrltrace.debugserver``'s routes: a bearer token, TLS settings for an
endpoint that asks for one (it serves https then), and turning every way a request can fail
into the one-line ``EvidenceError`` the CLI maps to an exit code (unreachable, refused with 401
or 403, or a reply that is not evidence).

Why it fetches records and not the server's ``/explain``: with the record lists
(``/debug/ctrltrace/evidence/...``) the decision procedure runs here, in the same
``explain_from`` a journal goes through, so ``explain --from`` is the journal's answer by
construction, with this machine's ``--since``, ``--limit``, ``--funnel`` and clock; and the
TUI's object view and time cursor ask the same queries of any evidence. ``/explain`` stays for
scripts with only ``curl``. The live view follows ``/records?since=CURSOR`` (``tail``).

Plain blocking HTTP (urllib): each caller is a command or a TUI worker thread, never an event
loop.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Self

from ctrltrace.debugwire import (
    CURSOR,
    ERROR,
    PREFIX,
    RECORD,
    RECORDS,
    NotARecord,
    Query,
    Route,
    record_from_json,
)
from ctrltrace.evidence import Closing, EvidenceRefused, EvidenceUnreachable, EvidenceUnreadable
from ctrltrace.records import Record

TIMEOUT_S = 30.0


class EndpointEvidence(Closing):
    """The ``Evidence`` of the manager serving its debug endpoint at ``url``.

    ``token`` is sent as a bearer token; ``certificate_authority`` (a PEM file) verifies an
    https endpoint's certificate, ``insecure`` skips verifying it.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        certificate_authority: Path | None = None,
        insecure: bool = False,
        timeout_s: float = TIMEOUT_S,
    ) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"--from {url!r}: expected http://HOST:PORT or https://HOST:PORT")
        self._base = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._timeout_s = timeout_s
        self._context: ssl.SSLContext | None = None
        if parsed.scheme == "https":
            try:
                self._context = ssl.create_default_context(
                    cafile=str(certificate_authority) if certificate_authority else None
                )
            except ssl.SSLError as error:
                raise ValueError(
                    f"--certificate-authority {certificate_authority}: not a PEM certificate "
                    f"({error.reason or error})"
                ) from None
            if insecure:
                self._context.check_hostname = False
                self._context.verify_mode = ssl.CERT_NONE

    @property
    def label(self) -> str:
        return f"debug endpoint {self._base}"

    def checked(self) -> Self:
        """This endpoint, once it has answered one small request: raises ``EvidenceError``
        when it does not answer, refuses us or is not a debug endpoint (opening a source fails
        on such things, not its first query: the TUI retries failed queries)."""
        self.tail(0, 1)
        return self

    def close(self) -> None:
        """Nothing held between requests."""

    # -- the Evidence queries ----------------------------------------------------------------

    def about(
        self, namespace: str, name: str, *, kind: str | None = None, since: float | None = None
    ) -> list[Record]:
        return self._records(
            Query.ABOUT, {"namespace": namespace, "name": name, "kind": kind, "since": since}
        )

    def watch_records(self, kind: str | None = None, since: float | None = None) -> list[Record]:
        return self._records(Query.WATCHES, {"kind": kind, "since": since})

    def lease_records(self, since: float | None = None) -> list[Record]:
        return self._records(Query.LEASES, {"since": since})

    def controller_records(self, since: float | None = None) -> list[Record]:
        return self._records(Query.CONTROLLERS, {"since": since})

    def reconciles(self, since: float | None = None) -> list[Record]:
        return self._records(Query.RECONCILES, {"since": since})

    def window(self, t0: float, t1: float) -> list[Record]:
        return self._records(Query.WINDOW, {"t0": t0, "t1": t1})

    def tail(self, after: int = 0, limit: int = 1_000) -> list[tuple[int, Record]]:
        body = self._get(Route.RECORDS, {"since": after, "limit": limit})
        tail = []
        for line in body.splitlines():
            if line.strip():
                entry = self._decode(line)
                if not isinstance(entry, dict) or not _is_cursor(entry.get(CURSOR)):
                    raise self._unreadable("a records line without a cursor")
                tail.append((entry[CURSOR], self._record(entry.get(RECORD))))
        return tail

    # -- HTTP --------------------------------------------------------------------------------

    def _records(self, query: str, params: dict[str, Any]) -> list[Record]:
        answer = self._decode(self._get(f"{Route.EVIDENCE}/{query}", params))
        if not isinstance(answer, dict) or not isinstance(answer.get(RECORDS), list):
            raise self._unreadable("no list of records")
        return [self._record(data) for data in answer[RECORDS]]

    def _record(self, data: Any) -> Record:
        try:
            return record_from_json(data)
        except NotARecord as error:
            raise self._unreadable(str(error)) from None

    def _decode(self, body: bytes) -> Any:
        try:
            return json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise self._unreadable("not JSON") from None

    def _unreadable(self, what: str) -> EvidenceUnreadable:
        return EvidenceUnreadable(
            f"{self._base} answered with something that is not ctrltrace evidence ({what}); "
            "is it a manager's debug endpoint?"
        )

    def _get(self, route: str, params: dict[str, Any]) -> bytes:
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        url = f"{self._base}{PREFIX}/{route}" + (f"?{query}" if query else "")
        request = urllib.request.Request(url, headers=self._headers)  # noqa: S310  # http(s) only
        try:
            with urllib.request.urlopen(  # noqa: S310
                request, timeout=self._timeout_s, context=self._context
            ) as response:
                body: bytes = response.read()
                return body
        except urllib.error.HTTPError as error:
            raise self._refusal(error) from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            hint = ""
            if isinstance(reason, ssl.SSLCertVerificationError):
                hint = "; pass --certificate-authority FILE (or --insecure-skip-tls-verify)"
            elif self._context is None and isinstance(reason, ConnectionResetError):
                hint = "; an endpoint that asks for a token serves https: try https://"
            raise EvidenceUnreachable(f"cannot reach {self._base}: {reason}{hint}") from None

    def _refusal(self, error: urllib.error.HTTPError) -> Exception:
        """The one-line error for a non-2xx answer, in the server's words when it sent some."""
        try:
            said = json.loads(error.read()).get(ERROR)
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, OSError):
            said = None
        status = error.code
        if status == 401:
            return EvidenceRefused(
                f"{self._base} refused the request (401): {said or 'token rejected'}"
            )
        if status == 403:
            return EvidenceRefused(
                f"{self._base} refused the request (403): {said or 'lacks get on ' + PREFIX}"
            )
        if said is None:
            return self._unreadable(f"HTTP {status}")
        return EvidenceUnreadable(f"{self._base} answered {status}: {said}")


def _is_cursor(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
