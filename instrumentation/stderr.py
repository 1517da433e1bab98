"""A stdlib logging handler for whatever `sys.stderr` is when a record is written.

Its own module, not compiled (proxy/native.py): a subclass of a Python class. A handler
that kept the stream it was made with would write to a closed one after a test's
capture, or after the stream was replaced.
"""

from __future__ import annotations

import logging
import sys
from typing import Any


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        """StreamHandler sets the stream it was given; this one has none of its own."""
