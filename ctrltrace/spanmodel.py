"""The span model: how a record is written on a span, so that spans can be read back as records.

Owns the names of everything ctrltrace's spans carry (semantic-convention names where
OpenTelemetry defines one, ``k8s.namespace.name``, ``error.type``, …, and a ``ctrltrace.*``
namespace for the rest), the span and span-event names that say which stage a span stands
for, the resource attributes that name a replica and its sampler, and the mapping of a
record's fields and attrs onto span attributes in both directions. The exporters write spans
with it (``ctrltrace.exporters.spans``); ``ctrltrace.evidence.rebuild`` reads them back with it.

How records sit on spans: EVENT, DISPATCH, WATCH, LEASE, CONTROLLER, MANAGER and KUBE_EVENT
are one span each; RECONCILE_START is a reconcile span's start, RECONCILE its end and
attributes, REQUEUE and WRITE are events on it. A record's causes are the span's parent and
links. A record's attrs go under a stage's own name where one exists (``ATTR_NAMES``), else
under ``ctrltrace.attr.<key>`` (a reconcile's start attrs under ``ctrltrace.start.<key>``, as
its end shares the span).

Pure: no OpenTelemetry import, no I/O. It may not decide which spans records make.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from ctrltrace.records import AttrValue, ObjectRef, Stage
from ctrltrace.vocabulary import Attr


class Settable(Protocol):
    """Span attributes being made: any mapping that takes record values."""

    def __setitem__(self, key: str, value: AttrValue, /) -> None: ...


# -- attribute names ---------------------------------------------------------------------------

# Semantic-convention names where OpenTelemetry defines one, ``ctrltrace.*`` for the rest.
K8S_NAMESPACE_NAME = "k8s.namespace.name"
ERROR_TYPE = "error.type"
HTTP_RESPONSE_STATUS_CODE = "http.response.status_code"
MESSAGING_BATCH_MESSAGE_COUNT = "messaging.batch.message_count"
OBJECT_API_VERSION = "ctrltrace.object.api_version"
OBJECT_KIND = "ctrltrace.object.kind"
OBJECT_NAME = "ctrltrace.object.name"
OBJECT_UID = "ctrltrace.object.uid"
RESOURCE_VERSION = "ctrltrace.resource_version"
GENERATION = "ctrltrace.generation"
EVENT_TYPE = "ctrltrace.event.type"  # ADDED / MODIFIED / DELETED, as the watch said
EVENT_WRITER = "ctrltrace.event.writer"  # the field manager that wrote this version
EVENT_SELF_CAUSED = "ctrltrace.event.self_caused"
CONTROLLER = "ctrltrace.controller"
REQUEST = "ctrltrace.request"
RECONCILE_ID = "ctrltrace.reconcile_id"
OUTCOME = "ctrltrace.outcome"
REASON = "ctrltrace.reason"
PREDICATE = "ctrltrace.predicate"
HANDLER = "ctrltrace.handler"
DISPATCH_EVENT_TYPE = "ctrltrace.dispatch.event_type"  # create / update / delete / generic
QUEUE_WAIT = "ctrltrace.queue.wait_s"
RETRIES = "ctrltrace.retries"
REQUEUE = "ctrltrace.requeue"  # rate_limited / after
REQUEUE_DELAY = "ctrltrace.requeue.delay_s"
REQUEUE_ATTEMPT = "ctrltrace.requeue.attempt"
WRITE_VERB = "ctrltrace.write.verb"
LEASE = "ctrltrace.lease"
LEASE_IDENTITY = "ctrltrace.lease.identity"
LEASE_HOLDER = "ctrltrace.lease.holder"
WATCH_RESOURCE = "ctrltrace.watch.resource"
LINK = "ctrltrace.link"  # on links: DISPATCH_LINK / REQUEUE_LINK / WRITE_LINK / CAUSED_LINK
START_REASON = "ctrltrace.reconcile.start_reason"  # a reconcile start's reason, where it has one
ATTR_PREFIX = "ctrltrace.attr."  # a record attr with no name of its own
START_PREFIX = "ctrltrace.start."  # the same for a reconcile span's start record

# What a link says it is (the LINK attribute's values).
DISPATCH_LINK = "dispatch"  # reconcile → another dispatch de-duplicated into it
REQUEUE_LINK = "requeue"  # reconcile → the reconcile whose requeue it is
WRITE_LINK = "write"  # event → the reconcile whose write it is
CAUSED_LINK = "caused_event"  # reconcile → the event its write caused, seen before the answer

# Resource attributes: which replica exported a span, and what its sampler keeps.
SERVICE_NAME = "service.name"
SERVICE_INSTANCE_ID = "service.instance.id"
K8S_POD_NAME = "k8s.pod.name"
SAMPLER = "ctrltrace.sampler"  # OTEL_TRACES_SAMPLER[:ARG] of the exporting process
REPLICA = Attr.REPLICA  # the record attr a reader adds: which replica exported the span
COMPLETE_SAMPLERS = frozenset({"always_on", "parentbased_always_on"})
"""Samplers that keep every trace: spans missing under them were lost, not sampled out."""

SCOPE_NAME = "ctrltrace"
"""The instrumentation scope of every span ctrltrace makes."""

# -- span and event names ----------------------------------------------------------------------

WRITE_EVENT = "write"  # a WRITE record: an event on its reconcile's span
REQUEUE_EVENT = "requeue"  # a REQUEUE record: the same
UNFINISHED = "unfinished"  # a reconcile span's outcome when it had no end record


def span_name(stage: Stage, what: str) -> str:
    """A span's name: its stage (a reconcile's, for RECONCILE_START) and what it is about."""
    return f"{stage.value} {what}"


def stage_of(name: str) -> Stage | None:
    """The stage a span of ctrltrace's stands for, from its name (RECONCILE: a reconcile)."""
    try:
        return Stage(name.partition(" ")[0])
    except ValueError:
        return None


# -- record attrs ------------------------------------------------------------------------------

ATTR_NAMES: Mapping[Stage, Mapping[str, str]] = {
    Stage.EVENT: {"writer": EVENT_WRITER, "self_caused": EVENT_SELF_CAUSED},
    Stage.DISPATCH: {
        "predicate": PREDICATE,
        "handler": HANDLER,
        "event_type": DISPATCH_EVENT_TYPE,
    },
    Stage.RECONCILE_START: {"queue_wait_s": QUEUE_WAIT, "retries": RETRIES},
    Stage.RECONCILE: {"error_type": ERROR_TYPE},
    Stage.REQUEUE: {"delay_s": REQUEUE_DELAY, "attempt": REQUEUE_ATTEMPT},
    Stage.LEASE: {"lease": LEASE, "identity": LEASE_IDENTITY, "holder": LEASE_HOLDER},
    Stage.WATCH: {
        "kind": OBJECT_KIND,
        "api_version": OBJECT_API_VERSION,
        "namespace": K8S_NAMESPACE_NAME,
        "status": HTTP_RESPONSE_STATUS_CODE,
        "resource": WATCH_RESOURCE,
    },
}
"""Per stage, the record attrs written under a name of their own rather than ATTR_PREFIX."""


def _prefix(stage: Stage) -> str:
    return START_PREFIX if stage is Stage.RECONCILE_START else ATTR_PREFIX


def put_attrs(stage: Stage, attrs: Mapping[str, AttrValue], into: Settable) -> None:
    """Write a record's attrs onto span attributes ``into``."""
    names = ATTR_NAMES.get(stage, {})
    prefix = _prefix(stage)
    for key, value in attrs.items():
        into[names.get(key) or prefix + key] = value


def get_attrs(stage: Stage, attributes: Mapping[str, AttrValue]) -> dict[str, AttrValue]:
    """A record's attrs read back from span attributes (``put_attrs`` reversed)."""
    names = ATTR_NAMES.get(stage, {})
    found = {key: attributes[name] for key, name in names.items() if name in attributes}
    prefix = _prefix(stage)
    for name, value in attributes.items():
        if name.startswith(prefix):
            found[name[len(prefix) :]] = value
    return found


def put_fields(
    *, controller: str, request: str, reconcile_id: str, reason: str, into: Settable
) -> None:
    """A record's controller, request, reconcile id and reason, those that are set."""
    if controller:
        into[CONTROLLER] = controller
    if request:
        into[REQUEST] = request
    if reconcile_id:
        into[RECONCILE_ID] = reconcile_id
    if reason:
        into[REASON] = reason


# The semantic conventions name a few built-in kinds' objects (k8s.pod.name, k8s.pod.uid, ...):
# kind -> (API group, name attribute, uid attribute or "" where the conventions define none).
_SEMCONV_KINDS: dict[str, tuple[str, str, str]] = {
    "Pod": ("", "k8s.pod.name", "k8s.pod.uid"),
    "Node": ("", "k8s.node.name", "k8s.node.uid"),
    "Namespace": ("", "k8s.namespace.name", ""),
    "Service": ("", "k8s.service.name", "k8s.service.uid"),
    "ReplicationController": (
        "",
        "k8s.replicationcontroller.name",
        "k8s.replicationcontroller.uid",
    ),
    "ResourceQuota": ("", "k8s.resourcequota.name", "k8s.resourcequota.uid"),
    "PersistentVolume": ("", "k8s.persistentvolume.name", "k8s.persistentvolume.uid"),
    "PersistentVolumeClaim": (
        "",
        "k8s.persistentvolumeclaim.name",
        "k8s.persistentvolumeclaim.uid",
    ),
    "Deployment": ("apps", "k8s.deployment.name", "k8s.deployment.uid"),
    "ReplicaSet": ("apps", "k8s.replicaset.name", "k8s.replicaset.uid"),
    "StatefulSet": ("apps", "k8s.statefulset.name", "k8s.statefulset.uid"),
    "DaemonSet": ("apps", "k8s.daemonset.name", "k8s.daemonset.uid"),
    "Job": ("batch", "k8s.job.name", "k8s.job.uid"),
    "CronJob": ("batch", "k8s.cronjob.name", "k8s.cronjob.uid"),
    "HorizontalPodAutoscaler": ("autoscaling", "k8s.hpa.name", "k8s.hpa.uid"),
    "StorageClass": ("storage.k8s.io", "k8s.storageclass.name", ""),
}


def put_object(ref: ObjectRef, attributes: Settable) -> None:
    """An object's identity, with the conventions' name and uid keys for built-in kinds."""
    attributes[OBJECT_API_VERSION] = ref.api_version
    attributes[OBJECT_KIND] = ref.kind
    attributes[OBJECT_NAME] = ref.name
    if ref.namespace:
        attributes[K8S_NAMESPACE_NAME] = ref.namespace
    if ref.uid:
        attributes[OBJECT_UID] = ref.uid
    if ref.resource_version:
        attributes[RESOURCE_VERSION] = ref.resource_version
    if ref.generation:
        attributes[GENERATION] = ref.generation
    semconv = _SEMCONV_KINDS.get(ref.kind)
    # The group decides: a custom resource may well be called "Deployment" too.
    if semconv is not None and ref.api_version.rpartition("/")[0] == semconv[0]:
        _, name_key, uid_key = semconv
        attributes[name_key] = ref.name
        if uid_key and ref.uid:
            attributes[uid_key] = ref.uid


def object_of(attributes: Mapping[str, AttrValue]) -> ObjectRef | None:
    """The object ``put_object`` wrote, if the span names one."""
    if OBJECT_NAME not in attributes:
        return None
    generation = attributes.get(GENERATION, 0)
    return ObjectRef(
        str(attributes.get(OBJECT_API_VERSION, "")),
        str(attributes.get(OBJECT_KIND, "")),
        str(attributes.get(K8S_NAMESPACE_NAME, "")),
        str(attributes[OBJECT_NAME]),
        str(attributes.get(OBJECT_UID, "")),
        str(attributes.get(RESOURCE_VERSION, "")),
        int(generation) if isinstance(generation, int | float | str) else 0,
    )
