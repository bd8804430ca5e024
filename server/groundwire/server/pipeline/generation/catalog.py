"""The model catalog: which models exist, where they are served, what they cost, and which
models each tier tries in turn.

Built-in entries carry the models' names, windows and prices but no endpoint: an LLM is
only ever called when the operator points groundwire at one (``GROUNDWIRE_LLM_BASE_URL``
for one gateway serving every model, or a catalog file with per-model endpoints). With
neither, the catalog has no available model and answers degrade to cited snippets.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from groundwire.server.pipeline.generation.types import Tier


class CatalogError(ValueError):
    """The catalog file or the built-ins with it are inconsistent; the message says where."""


@dataclass(frozen=True)
class ModelSpec:
    """One model of the catalog. Prices are micros of ``currency`` per million tokens."""

    name: str
    upstream_model: str
    context_window: int
    max_output_tokens: int
    input_micros_per_million: int
    output_micros_per_million: int
    cached_input_micros_per_million: int | None = None  # None: cached input costs as input
    currency: str = "USD"
    provider: str = "openai"  # the gen_ai.system span attribute
    base_url: str | None = None
    api_key_env: str | None = None  # the environment variable holding the API key
    api_key: str | None = field(default=None, repr=False)

    def cost_micros_numerator(self, prompt: int, completion: int, cached: int) -> int:
        """Cost in micros times one million (exact; round once, after summing attempts)."""
        cached = min(cached, prompt)
        cached_price = (
            self.input_micros_per_million
            if self.cached_input_micros_per_million is None
            else self.cached_input_micros_per_million
        )
        return (
            (prompt - cached) * self.input_micros_per_million
            + cached * cached_price
            + completion * self.output_micros_per_million
        )


def _micros(usd_per_million: str) -> int:
    return int(Decimal(usd_per_million) * 1_000_000)


BUILTIN_MODELS: tuple[ModelSpec, ...] = (
    ModelSpec(
        "deepseek-v4-flash",
        "deepseek-ai/DeepSeek-V4-Flash",
        128_000,
        8_192,
        _micros("0.27"),
        _micros("1.10"),
        provider="deepseek",
    ),
    ModelSpec(
        "deepseek-v4-pro",
        "deepseek-ai/DeepSeek-V4-Pro",
        200_000,
        8_192,
        _micros("0.55"),
        _micros("2.20"),
        provider="deepseek",
    ),
    ModelSpec(
        "qwen3-32b",
        "Qwen/Qwen3-32B",
        32_768,
        8_192,
        _micros("0.30"),
        _micros("1.20"),
        provider="qwen",
    ),
    ModelSpec(
        "glm-4-plus",
        "glm-4-plus",
        128_000,
        4_096,
        _micros("0.20"),
        _micros("0.80"),
        provider="zhipu",
    ),
    ModelSpec("gpt-4o", "gpt-4o", 128_000, 16_384, _micros("2.50"), _micros("10.00")),
)
BUILTIN_TIERS: dict[Tier, tuple[str, ...]] = {
    Tier.STANDARD: ("deepseek-v4-flash", "qwen3-32b", "gpt-4o"),
    Tier.ECONOMY: ("glm-4-plus", "deepseek-v4-flash"),
    Tier.LONG_CONTEXT: ("deepseek-v4-pro", "gpt-4o"),
}


@dataclass(frozen=True)
class Catalog:
    """The available models and the tiers' chains (only available models appear)."""

    models: Mapping[str, ModelSpec]
    tiers: Mapping[Tier, tuple[str, ...]]
    unavailable: Mapping[str, str] = field(default_factory=dict)  # model -> why

    @property
    def empty(self) -> bool:
        """True when no model can be called: every answer is a degraded one."""
        return not self.models

    @property
    def economy_model(self) -> str | None:
        """Where rate-limited calls go: the head of the economy chain."""
        chain = self.tiers.get(Tier.ECONOMY, ())
        return chain[0] if chain else None

    @property
    def long_context_model(self) -> str | None:
        """Where prompts too long for the chosen model go: the head of the long-context chain."""
        chain = self.tiers.get(Tier.LONG_CONTEXT, ())
        return chain[0] if chain else None

    def tier_of(self, model: str) -> Tier:
        """The first tier whose chain holds ``model`` (standard when none does)."""
        for tier in (Tier.STANDARD, Tier.ECONOMY, Tier.LONG_CONTEXT):
            if model in self.tiers.get(tier, ()):
                return tier
        return Tier.STANDARD

    def chain(self, tier: Tier, model: str | None = None) -> tuple[str, ...]:
        """The models to try in order: an explicit ``model`` first, then its tier's chain."""
        if model is None:
            return self.tiers.get(tier, ())
        rest = self.tiers.get(self.tier_of(model), ())
        return (model, *(m for m in rest if m != model))

    @property
    def currency(self) -> str:
        """The one currency every price is in."""
        return next(iter(self.models.values())).currency if self.models else "USD"


_PRICE_FIELDS = {
    "input_usd_per_million": "input_micros_per_million",
    "output_usd_per_million": "output_micros_per_million",
    "cached_input_usd_per_million": "cached_input_micros_per_million",
}
_INT_FIELDS = ("context_window", "max_output_tokens")
_STR_FIELDS = ("upstream_model", "currency", "provider", "base_url", "api_key_env")


def _model_from_table(name: str, table: Mapping[str, Any], base: ModelSpec | None) -> ModelSpec:
    where = f"models.{name}"
    known = {*_PRICE_FIELDS, *_INT_FIELDS, *_STR_FIELDS}
    unknown = sorted(set(table) - known)
    if unknown:
        raise CatalogError(f"{where}: unknown key(s) {', '.join(unknown)}")
    values: dict[str, Any] = {}
    for key in _STR_FIELDS:
        if key in table:
            if not isinstance(table[key], str) or not table[key]:
                raise CatalogError(f"{where}.{key}: must be a non-empty string")
            values[key] = table[key]
    for key in _INT_FIELDS:
        if key in table:
            if not isinstance(table[key], int) or table[key] < 1:
                raise CatalogError(f"{where}.{key}: must be a positive integer")
            values[key] = table[key]
    for key, target in _PRICE_FIELDS.items():
        if key in table:
            try:
                # str() first: a TOML float like 0.27 must not carry binary noise into money.
                price = Decimal(str(table[key]))
            except InvalidOperation:
                raise CatalogError(f"{where}.{key}: must be a number") from None
            if price < 0:
                raise CatalogError(f"{where}.{key}: must not be negative")
            values[target] = int(price * 1_000_000)
    if base is not None:
        return replace(base, **values)
    missing = [
        k for k in ("upstream_model", "context_window", "max_output_tokens") if k not in values
    ] + [k for k, t in list(_PRICE_FIELDS.items())[:2] if t not in values]
    if missing:
        raise CatalogError(f"{where}: a new model needs {', '.join(missing)}")
    return ModelSpec(name=name, **values)


def load_catalog(
    path: Path | None,
    *,
    base_url: str | None,
    api_key: str | None,
    secret: Callable[[str], str | None],
) -> Catalog:
    """Build the catalog from the built-ins, the file at ``path`` (TOML) and a shared
    endpoint. ``base_url``/``api_key`` (``GROUNDWIRE_LLM_BASE_URL``/``_API_KEY``) serve every
    model that names no endpoint of its own. ``secret`` reads the environment variable a
    model's ``api_key_env`` names. A model without an endpoint, or whose key variable is
    unset, is left out (listed in ``unavailable``)."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise CatalogError(f"cannot read the catalog {path}: {exc}") from None
    unknown = sorted(set(data) - {"builtin", "models", "tiers"})
    if unknown:
        raise CatalogError(f"unknown top-level key(s) {', '.join(unknown)}")
    models: dict[str, ModelSpec] = {}
    if data.get("builtin", True):
        models = {m.name: m for m in BUILTIN_MODELS}
    for name, table in (data.get("models") or {}).items():
        if not isinstance(table, dict):
            raise CatalogError(f"models.{name}: must be a table")
        models[name] = _model_from_table(name, table, models.get(name))
    tiers: dict[Tier, tuple[str, ...]] = dict(BUILTIN_TIERS) if data.get("builtin", True) else {}
    for key, chain in (data.get("tiers") or {}).items():
        try:
            tier = Tier(key)
        except ValueError:
            raise CatalogError(
                f"tiers.{key}: unknown tier (use {', '.join(t.value for t in Tier)})"
            ) from None
        if not isinstance(chain, list) or not all(isinstance(m, str) for m in chain):
            raise CatalogError(f"tiers.{key}: must be a list of model names")
        for name in chain:
            if name not in models:
                raise CatalogError(f"tiers.{key}: {name!r} is not in the catalog")
        tiers[tier] = tuple(chain)
    currencies = {m.currency for m in models.values()}
    if len(currencies) > 1:
        raise CatalogError(f"every model must be priced in one currency, got {sorted(currencies)}")

    available: dict[str, ModelSpec] = {}
    unavailable: dict[str, str] = {}
    for name, spec in models.items():
        if spec.base_url is None and base_url is None:
            unavailable[name] = "no endpoint (set base_url or GROUNDWIRE_LLM_BASE_URL)"
            continue
        if spec.base_url is not None and spec.api_key_env is not None:
            key = secret(spec.api_key_env)
            if not key:
                unavailable[name] = f"{spec.api_key_env} is not set"
                continue
            available[name] = replace(spec, api_key=key)
        elif spec.base_url is not None:
            available[name] = spec
        else:
            available[name] = replace(spec, base_url=base_url, api_key=api_key)
    return Catalog(
        models=available,
        tiers={t: tuple(m for m in chain if m in available) for t, chain in tiers.items()},
        unavailable=unavailable,
    )
