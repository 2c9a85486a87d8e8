"""Kinds and the resources that serve them: apiVersion + kind → URL paths, via discovery.

Owns the REST mapping (plural, scope) and its cache; a kind the server does not serve raises
``KindNotFound``, which the caller records and retries (a CRD may be installed later). Its
message says what the server serves instead: the group's versions, or the closest kinds.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from ctrltrace.transport import ApiError, Json, Transport


class KindNotFound(Exception):
    def __init__(self, api_version: str, kind: str, detail: str) -> None:
        super().__init__(f"kind {kind} in {api_version} is not served: {detail}")
        self.api_version = api_version
        self.kind = kind


@dataclass(frozen=True, slots=True)
class Kind:
    api_version: str
    kind: str

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]

    def __str__(self) -> str:
        return f"{self.kind}.{self.group}" if self.group else self.kind


@dataclass(frozen=True, slots=True)
class Resource:
    kind: Kind
    plural: str
    namespaced: bool

    def path(self, namespace: str = "", name: str = "", subresource: str = "") -> str:
        base = "/api/v1" if self.kind.api_version == "v1" else f"/apis/{self.kind.api_version}"
        parts = [base]
        if self.namespaced and namespace:
            parts.append(f"namespaces/{namespace}")
        parts.append(self.plural)
        if name:
            parts.append(name)
        if subresource:
            parts.append(subresource)
        return "/".join(parts)

    @property
    def group_resource(self) -> str:
        return f"{self.plural}.{self.kind.group}" if self.kind.group else self.plural


class RestMapper:
    """Resolves kinds through discovery; a miss is asked again, so a new CRD is found."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport
        self._resolved: dict[Kind, Resource] = {}

    def namespaced(self, kind: Kind) -> bool | None:
        """Whether ``kind`` is namespaced, if it was resolved already (no request)."""
        found = self._resolved.get(kind)
        return None if found is None else found.namespaced

    def forget(self, kind: Kind) -> None:
        """Ask discovery again next time: ``kind`` answered 404, so its CRD may be gone."""
        self._resolved.pop(kind, None)

    async def resolve(self, kind: Kind) -> Resource:
        if (found := self._resolved.get(kind)) is not None:
            return found
        path = "/api/v1" if kind.api_version == "v1" else f"/apis/{kind.api_version}"
        try:
            listing: Json = await self._transport.request("GET", path)
        except ApiError as error:
            if error.status == 404:
                served = await self._served_versions(kind.group) if kind.group else []
                raise KindNotFound(
                    kind.api_version,
                    kind.kind,
                    f"the server does not serve {kind.api_version}; "
                    + (
                        f"{kind.group} is served in {', '.join(served)} only"
                        if served
                        else f"it serves no API group {kind.group} (no CRD defines it)"
                    ),
                ) from error
            raise
        kinds = []
        for entry in listing.get("resources", []):
            if entry.get("kind") == kind.kind and "/" not in entry.get("name", ""):
                resource = Resource(kind, entry["name"], bool(entry.get("namespaced")))
                self._resolved[kind] = resource
                return resource
            kinds.append(str(entry.get("kind", "")))
        closest = difflib.get_close_matches(kind.kind, sorted(set(kinds)), n=3, cutoff=0.6)
        raise KindNotFound(
            kind.api_version,
            kind.kind,
            f"{kind.api_version} has no kind {kind.kind}"
            + (f"; closest: {', '.join(closest)}" if closest else ""),
        )

    async def _served_versions(self, group: str) -> list[str]:
        """The versions the server serves of ``group``: what a kind-not-found should name."""
        try:
            listing: Json = await self._transport.request("GET", f"/apis/{group}")
        except ApiError:
            return []
        return [str(entry.get("version")) for entry in listing.get("versions", [])]
