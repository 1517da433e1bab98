"""Encoded: a span or log record already in OTLP bytes, waiting in an export queue.

A module of its own so that it is never compiled (proxy/native.py): mypyc drops a
class's keywords, and this Struct's `frozen` and `gc=False` are the point of it.
"""

from __future__ import annotations

from typing import Any

import msgspec


class Encoded(msgspec.Struct, frozen=True, gc=False):
    """One span or log record already encoded, waiting in an export queue.

    Encoding each item when it is queued rather than the whole batch when it is
    exported spreads the work (a 512-span batch was ~6 ms of Python in one burst,
    which the event loop waited behind for the GIL), and the queue holds bytes
    the garbage collector never walks instead of SDK objects that survived into
    its older generations. `gc=False`: it refers to the shared resource and scope
    only, so it can be part of no cycle.
    """

    #: (resource, scope), one tuple shared by the items an encoder prepared with them: a
    #: batch is one group when its items all hold the same tuple (see _Encoder.encode).
    group: tuple[Any, Any]
    #: The item as its scope's child field (tag, length, message).
    framed: bytes

    @property
    def resource(self) -> Any:
        return self.group[0]

    @property
    def instrumentation_scope(self) -> Any:
        return self.group[1]
