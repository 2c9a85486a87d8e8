"""ctrltrace: a Kubernetes controller runtime in which every stage says what it did and why.

The public API is what ``__all__`` lists; every other module is private.

>>> import ctrltrace as ct
>>> mgr = ct.Manager(name="widgets", leader_election_id="widgets.example.com")
"""

from ctrltrace import handlers, predicates
from ctrltrace._version import __version__
from ctrltrace.builder import Builder, BuildError
from ctrltrace.client import Client, NotCached, OperationResult, Propagation, Reader
from ctrltrace.clock import Clock, FakeClock, SystemClock
from ctrltrace.context import Context
from ctrltrace.kubeevents import EventRecorder
from ctrltrace.leaderelection import LeaderLost, LeaseTiming
from ctrltrace.manager import Manager
from ctrltrace.objects import (
    AlreadyOwnedError,
    add_finalizer,
    contains_finalizer,
    controller_of,
    find_condition,
    is_condition_true,
    is_controlled_by,
    remove_condition,
    remove_finalizer,
    set_condition,
    set_controller_reference,
    set_owner_reference,
)
from ctrltrace.reconcile import Result, TerminalError
from ctrltrace.records import Collect, ObjectRef, Record, Recorder, Stage
from ctrltrace.request import Request
from ctrltrace.transport import (
    AlreadyExists,
    ApiError,
    ConfigError,
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
)

__all__ = [
    "AlreadyExists",
    "AlreadyOwnedError",
    "ApiError",
    "BuildError",
    "Builder",
    "Client",
    "Clock",
    "Collect",
    "ConfigError",
    "Conflict",
    "Context",
    "EventRecorder",
    "FakeClock",
    "Forbidden",
    "Invalid",
    "LeaderLost",
    "LeaseTiming",
    "Manager",
    "NotCached",
    "NotFound",
    "ObjectRef",
    "OperationResult",
    "Propagation",
    "Reader",
    "Record",
    "Recorder",
    "Request",
    "Result",
    "Stage",
    "SystemClock",
    "TerminalError",
    "__version__",
    "add_finalizer",
    "contains_finalizer",
    "controller_of",
    "find_condition",
    "handlers",
    "is_condition_true",
    "is_controlled_by",
    "predicates",
    "remove_condition",
    "remove_finalizer",
    "set_condition",
    "set_controller_reference",
    "set_owner_reference",
]
