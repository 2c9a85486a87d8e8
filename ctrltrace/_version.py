"""The distribution's version, in one place (read by packaging and by ``ctrltrace --version``)."""

__version__ = "0.1.0"
