"""Estimated cost from a price table (USD per million tokens).

The shipped table covers common OpenAI and Anthropic models; the config's
`telemetry.prices` overrides or extends it. Model names match exactly first,
then by the longest configured prefix (so dated snapshots such as
`gpt-4o-2024-08-06` find `gpt-4o`).
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources

import msgspec
import yaml

#: Model names matched by prefix are remembered (bounded, cleared when full): providers
#: answer with dated snapshots (`gpt-4o-mini-2024-07-18`), which miss the exact lookup
#: and scanned every configured prefix on every record.
_REMEMBERED = 1024


class Price(msgspec.Struct, frozen=True):
    input: float
    output: float
    cached_input: float | None = None


def shipped_prices() -> dict[str, Price]:
    text = resources.files("instrumentation").joinpath("prices.yaml").read_text("utf-8")
    return msgspec.convert(yaml.safe_load(text)["models"], dict[str, Price])


class PriceTable:
    def __init__(self, prices: Mapping[str, Price]) -> None:
        self._prices = dict(prices)
        self._prefixes = sorted(self._prices, key=len, reverse=True)
        #: Prefix matches by model name (None: no price). Read and written by the
        #: telemetry thread; single dict operations are atomic under the GIL.
        self._matched: dict[str, Price | None] = {}

    def lookup(self, model: str | None) -> Price | None:
        if not model:
            return None
        price = self._prices.get(model)
        if price is not None:
            return price
        try:
            return self._matched[model]
        except KeyError:  # the first record of this model name
            pass
        found = self._by_prefix(model)
        if len(self._matched) >= _REMEMBERED:
            self._matched.clear()
        self._matched[model] = found
        return found

    def remembered(self) -> int:
        """How many prefix matches are remembered (bounded by _REMEMBERED)."""
        return len(self._matched)

    def _by_prefix(self, model: str) -> Price | None:
        for prefix in self._prefixes:
            if model.startswith(prefix):
                return self._prices[prefix]
        return None

    def cost(
        self, model: str | None, input_tokens: int, output_tokens: int, cached_tokens: int
    ) -> float | None:
        """USD for one call; `input_tokens` includes the cached ones, as in the conventions."""
        price = self.lookup(model)
        if price is None:
            return None
        cached_rate = price.cached_input if price.cached_input is not None else price.input
        fresh = max(input_tokens - cached_tokens, 0)
        total = fresh * price.input + cached_tokens * cached_rate + output_tokens * price.output
        return total / 1_000_000
