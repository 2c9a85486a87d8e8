"""Exporters: OTLP traces and Prometheus metrics (installed as ``ctrltrace.exporters``).

Wired at the edge by the CLI; the runtime core never imports this package.
"""
