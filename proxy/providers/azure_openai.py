"""Azure OpenAI: the deployment is in the URL, the key in `api-key`, `api-version` in the query."""

from __future__ import annotations

from typing import ClassVar
from urllib.parse import parse_qsl, quote, urlencode

from proxy.endpoints import Wire
from proxy.providers.base import Incoming, ProviderSettings
from proxy.providers.openai import OpenAIWire

_TO_AZURE = {
    "/v1/chat/completions": "chat/completions",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
}
#: Operations Azure serves only on its v1 surface (`/openai/v1/...`, the OpenAI paths
#: with the deployment named by the body's `model`, and no dated api-version: Azure
#: refuses one there).
_TO_AZURE_V1 = {"/v1/responses": "/openai/v1/responses"}


class AzureOpenAIAdapter(OpenAIWire):
    kind: ClassVar[str] = "azure_openai"
    wire: ClassVar[Wire] = "openai"
    provider_name: ClassVar[str] = "azure.ai.openai"
    auth_header: ClassVar[tuple[str, str]] = ("api-key", "")
    #: Deployment paths are `/openai/deployments/...`: base_url is the resource's
    #: endpoint, or a gateway prefix, which may end in /v1 (an APIM API suffix).
    path_root: ClassVar[str] = "/openai"

    def path_and_query(
        self, incoming: Incoming, settings: ProviderSettings, model: str | None
    ) -> str:
        endpoint = incoming.endpoint
        deployment = model or endpoint.deployment or incoming.fields.model or ""
        operation = endpoint.path if endpoint.deployment else _TO_AZURE.get(endpoint.path)
        if operation is None:
            v1 = None if endpoint.deployment else _TO_AZURE_V1.get(endpoint.path)
            if v1 is not None:
                return v1 + (f"?{incoming.query}" if incoming.query else "")
            return super().path_and_query(incoming, settings, model)
        path = f"/openai/deployments/{quote(deployment, safe='')}/{operation}"
        return path + "?" + self._query(incoming.query, settings.api_version)

    @staticmethod
    def _query(client_query: str, api_version: str | None) -> str:
        params = dict(parse_qsl(client_query, keep_blank_values=True))
        if api_version is not None:
            params["api-version"] = api_version
        return urlencode(params)

    def body(self, incoming: Incoming, model: str | None) -> bytes:
        if incoming.endpoint.deployment is not None:
            # The deployment in the URL selects the model; the body goes as sent.
            return incoming.body
        return super().body(incoming, model)
