"""Pure extractors: raw request/response bytes in, GenAI semantic-convention facts out.

One extractor per API (keyed like `proxy.endpoints.Endpoint.api`). They do no
I/O and never raise: a body they cannot read yields empty or partial facts.
"""

from __future__ import annotations

from instrumentation.extract.anthropic import Messages
from instrumentation.extract.base import (
    AttrValue,
    Extractor,
    RequestFacts,
    ResponseFacts,
    StreamObserver,
)
from instrumentation.extract.embeddings import Embeddings
from instrumentation.extract.openai_chat import ChatCompletions
from instrumentation.extract.openai_completions import Completions
from instrumentation.extract.responses import Responses

EXTRACTORS: dict[str, Extractor] = {
    "chat_completions": ChatCompletions(),
    "completions": Completions(),
    "embeddings": Embeddings(),
    "responses": Responses(),
    "messages": Messages(),
}

__all__ = [
    "EXTRACTORS",
    "AttrValue",
    "Extractor",
    "RequestFacts",
    "ResponseFacts",
    "StreamObserver",
]
