"""OpenAI legacy text completions (`/v1/completions`): a prompt in, `choices[].text` out."""

from __future__ import annotations

import msgspec

from instrumentation.extract import parts
from instrumentation.extract.base import (
    GuardedExtractor,
    RequestFacts,
    ResponseFacts,
    StreamObserver,
)
from instrumentation.extract.decoding import decode
from instrumentation.extract.openai_choices import ChoicesAssembler
from instrumentation.extract.openai_common import SamplingParams, sampling_attributes


class _Prompt(msgspec.Struct):
    # A string, a batch of strings, or token ids; only text is content worth
    # capturing (token-id batches fail validation and are dropped).
    prompt: str | list[str | int] | None = None


class Completions(GuardedExtractor):
    operation = "text_completion"

    def read_request(self, body: bytes, capture: bool) -> RequestFacts:
        params = decode(body, SamplingParams) or SamplingParams()
        facts = RequestFacts(attributes=sampling_attributes(params))
        prompt = decode(body, _Prompt) if capture else None
        if prompt is not None:
            texts = _texts(prompt.prompt)
            if texts:
                facts.input_messages = [parts.message("user", [parts.text(t) for t in texts])]
        return facts

    def read_response(self, body: bytes, capture: bool) -> ResponseFacts:
        return ChoicesAssembler(capture).body(body)

    def observer(self, capture: bool) -> StreamObserver:
        return ChoicesAssembler(capture)


def _texts(prompt: str | list[str | int] | None) -> list[str]:
    if isinstance(prompt, str):
        return [prompt]
    return [item for item in prompt or () if isinstance(item, str)]
