"""The controllers ``bench.compare`` runs side by side, one process each.

``ctrltrace_noop`` (a ctrltrace manager with a no-op reconcile), ``kopf_event`` (a kopf
``on.event`` handler) and ``kopf_normal`` (kopf ``on.create`` + ``on.update``). Each tells the
benchmark what it handled through ``_handled``, the same way and at the same cost.
"""
