"""The type of a rewrite applied to blocks of complete SSE events on their way to the client."""

from __future__ import annotations

from collections.abc import Callable

Transform = Callable[[bytes], bytes]
