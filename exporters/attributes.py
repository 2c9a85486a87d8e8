"""The names of the attributes ctrltrace's spans carry, and an object's attributes.

Installed as ``ctrltrace.exporters.attributes``.

Owns the span vocabulary that tools reading the traces match on: semantic-convention names
where OpenTelemetry defines one (``k8s.namespace.name``, ``k8s.pod.name``, ``error.type``, …)
and a ``ctrltrace.*`` namespace for the rest; and ``object_attributes``, one object's
identity as span attributes.

It may not make spans or read records' meaning: ``spans`` does both.
"""

from __future__ import annotations

from opentelemetry.util.types import AttributeValue

from ctrltrace.records import ObjectRef

Attributes = dict[str, AttributeValue]

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
LINK = "ctrltrace.link"  # on links: dispatch / requeue / write / caused_event

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


def object_attributes(ref: ObjectRef) -> Attributes:
    """An object's identity, with the conventions' name and uid keys for built-in kinds."""
    attributes: Attributes = {
        OBJECT_API_VERSION: ref.api_version,
        OBJECT_KIND: ref.kind,
        OBJECT_NAME: ref.name,
    }
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
    return attributes
