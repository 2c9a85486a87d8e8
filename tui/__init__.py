"""The live terminal view (installed as ``ctrltrace.tui``).

It reads records only: it never talks to Kubernetes.
"""
