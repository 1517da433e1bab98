"""Which API an incoming request speaks: a pure function of method, path and headers.

The endpoint decides the client's wire format (for errors spangate makes), the
GenAI operation (for telemetry), and where the model name lives.
"""

from __future__ import annotations

import re
from typing import Literal

import msgspec

#: The body format a client speaks. Azure OpenAI bodies are OpenAI bodies.
Wire = Literal["openai", "anthropic"]
#: How a stream that broke after the commit point is ended (proxy/sse_errors.py): with
#: the error event of the client's wire format, except on the Responses API, which has
#: an `error` event of its own.
StreamErrors = Literal["openai", "openai_responses", "anthropic"]
#: The URL/auth dialect, which picks the default provider for pass-through.
Dialect = Literal["openai", "azure_openai", "anthropic"]


class Endpoint(msgspec.Struct, frozen=True):
    dialect: Dialect
    #: Short API name: chat_completions, completions, embeddings, responses,
    #: messages, count_tokens, models, other.
    api: str
    #: GenAI operation name, None where the endpoint is not an inference call.
    operation: str | None
    #: Request path relative to the API root, e.g. "/v1/chat/completions" or,
    #: for Azure, "chat/completions" below the deployment.
    path: str
    #: Azure only: the deployment named in the URL (it plays the role of `model`).
    deployment: str | None = None

    @property
    def wire(self) -> Wire:
        return "anthropic" if self.dialect == "anthropic" else "openai"

    @property
    def stream_errors(self) -> StreamErrors:
        return "openai_responses" if self.api == "responses" else self.wire

    @property
    def reads_body(self) -> bool:
        """True where spangate decodes the body's fields on arrival: every inference API,
        an Azure deployment's too; not the model list nor a pass-through path."""
        return self.api not in ("models", "other")

    @property
    def has_model(self) -> bool:
        """True where the body carries a `model` to route on (on an Azure deployment path
        the URL names it)."""
        return self.reads_body and self.deployment is None


_OPENAI_POST: dict[str, tuple[str, str | None]] = {
    "/v1/chat/completions": ("chat_completions", "chat"),
    "/v1/completions": ("completions", "text_completion"),
    "/v1/embeddings": ("embeddings", "embeddings"),
    "/v1/responses": ("responses", "chat"),
}
_ANTHROPIC_POST: dict[str, tuple[str, str | None]] = {
    "/v1/messages": ("messages", "chat"),
    "/v1/messages/count_tokens": ("count_tokens", None),
}
_AZURE_OPS: dict[str, tuple[str, str]] = {
    "chat/completions": ("chat_completions", "chat"),
    "completions": ("completions", "text_completion"),
    "embeddings": ("embeddings", "embeddings"),
}
_AZURE_PATH = re.compile(r"^/openai/deployments/([^/]+)/(.+)$")


def classify(method: str, path: str, anthropic_hint: bool) -> Endpoint | None:
    """Map a request to its endpoint, or None when spangate does not serve the path.

    `anthropic_hint` is true when the request carries `anthropic-version`: the
    Anthropic SDKs always send it, so it disambiguates shared paths such as
    `/v1/models`.
    """
    if method == "POST" and path in _OPENAI_POST:
        api, op = _OPENAI_POST[path]
        return Endpoint("openai", api, op, path)
    if method == "POST" and path in _ANTHROPIC_POST:
        api, op = _ANTHROPIC_POST[path]
        return Endpoint("anthropic", api, op, path)
    azure = _AZURE_PATH.match(path)
    if azure is not None:
        return _azure_endpoint(method, azure.group(1), azure.group(2))
    if path.startswith("/v1/"):
        dialect: Dialect = (
            "anthropic" if anthropic_hint or path.startswith("/v1/messages") else "openai"
        )
        api = "models" if path == "/v1/models" and method == "GET" else "other"
        return Endpoint(dialect, api, None, path)
    return None


def _azure_endpoint(method: str, deployment: str, rest: str) -> Endpoint:
    api, op = _AZURE_OPS.get(rest, ("other", None)) if method == "POST" else ("other", None)
    return Endpoint("azure_openai", api, op, rest, deployment=deployment)
