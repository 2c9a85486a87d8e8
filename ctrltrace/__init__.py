"""ctrltrace: a Kubernetes controller runtime in which every stage says what it did and why.

The public API is what ``__all__`` lists; every other module is private.
"""

from ctrltrace._version import __version__

__all__ = ["__version__"]
