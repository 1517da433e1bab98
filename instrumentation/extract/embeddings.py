"""OpenAI embeddings (`/v1/embeddings`): request formats, vector size and input tokens.

Embedding responses can be large (thousands of vectors); only the first
vector is decoded, since all of one response share a dimension.
"""

from __future__ import annotations

import base64
import binascii

import msgspec

from instrumentation import semconv as sc
from instrumentation.extract.base import (
    GuardedExtractor,
    NullObserver,
    RequestFacts,
    ResponseFacts,
    StreamObserver,
)
from instrumentation.extract.decoding import decode
from instrumentation.extract.openai_common import Error, error_type

#: Bytes per element of a base64 vector: little-endian float32.
_FLOAT32 = 4


class _Request(msgspec.Struct):
    encoding_format: str | None = None


class _Usage(msgspec.Struct):
    prompt_tokens: int | None = None


class _Response(msgspec.Struct):
    # Raw items: the vectors other than the first are never decoded.
    data: list[msgspec.Raw] | None = None
    model: str | None = None
    usage: _Usage | None = None
    error: Error | None = None


class _Embedding(msgspec.Struct):
    embedding: list[float] | str | None = None


class Embeddings(GuardedExtractor):
    operation = "embeddings"

    def read_request(self, body: bytes, capture: bool) -> RequestFacts:
        request = decode(body, _Request)
        facts = RequestFacts()
        if request is not None and request.encoding_format:
            facts.attributes[sc.GEN_AI_REQUEST_ENCODING_FORMATS] = [request.encoding_format]
        return facts

    def read_response(self, body: bytes, capture: bool) -> ResponseFacts:
        response = decode(body, _Response)
        if response is None:
            return ResponseFacts()
        facts = ResponseFacts(response_model=response.model or None)
        if response.usage is not None:
            facts.input_tokens = response.usage.prompt_tokens
        if response.error is not None:
            facts.error_type = error_type(response.error)
        dimension = _dimension(response.data[0]) if response.data else None
        if dimension is not None:
            facts.attributes[sc.GEN_AI_EMBEDDINGS_DIMENSION_COUNT] = dimension
        return facts

    def observer(self, capture: bool) -> StreamObserver:
        # The embeddings API does not stream.
        return NullObserver()


def _dimension(raw: msgspec.Raw) -> int | None:
    item = decode(raw, _Embedding)
    vector = item.embedding if item is not None else None
    if isinstance(vector, list):
        return len(vector) or None
    if not vector:
        return None
    try:
        size = len(base64.b64decode(vector, validate=True))
    except (binascii.Error, ValueError):
        return None
    return size // _FLOAT32 if size % _FLOAT32 == 0 and size else None
