"""The model catalog: built-ins, a TOML file over them, endpoints and keys, and the errors
that name what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from groundwire.server.pipeline.generation.catalog import BUILTIN_MODELS, CatalogError, load_catalog
from groundwire.server.pipeline.generation.types import Tier


def no_secrets(name: str) -> str | None:
    return None


def test_without_an_endpoint_no_model_is_available() -> None:
    catalog = load_catalog(None, base_url=None, api_key=None, secret=no_secrets)
    assert catalog.empty and not any(catalog.tiers.values())
    assert set(catalog.unavailable) == {m.name for m in BUILTIN_MODELS}


def test_a_shared_endpoint_serves_every_builtin_model_at_the_seed_prices() -> None:
    catalog = load_catalog(None, base_url="http://gw/v1", api_key="k", secret=no_secrets)
    flash = catalog.models["deepseek-v4-flash"]
    assert flash.base_url == "http://gw/v1" and flash.api_key == "k"
    assert flash.upstream_model == "deepseek-ai/DeepSeek-V4-Flash"
    prices = {
        name: (spec.input_micros_per_million, spec.output_micros_per_million, spec.context_window)
        for name, spec in catalog.models.items()
    }
    assert prices == {
        "deepseek-v4-flash": (270_000, 1_100_000, 128_000),
        "deepseek-v4-pro": (550_000, 2_200_000, 200_000),
        "qwen3-32b": (300_000, 1_200_000, 32_768),
        "glm-4-plus": (200_000, 800_000, 128_000),
        "gpt-4o": (2_500_000, 10_000_000, 128_000),
    }
    assert catalog.chain(Tier.STANDARD)[0] == "deepseek-v4-flash"
    assert catalog.economy_model == "glm-4-plus"
    assert catalog.long_context_model == "deepseek-v4-pro"
    # An explicit model goes first, then the rest of its tier's chain.
    assert catalog.chain(Tier.STANDARD, "gpt-4o") == ("gpt-4o", "deepseek-v4-flash", "qwen3-32b")
    assert catalog.chain(Tier.STANDARD, "glm-4-plus")[0] == "glm-4-plus"
    assert catalog.tier_of("glm-4-plus") is Tier.ECONOMY


def test_a_file_overrides_builtins_adds_models_and_reads_keys_by_variable(tmp_path: Path) -> None:
    path = tmp_path / "catalog.toml"
    path.write_text(
        """
[models.gpt-4o]
base_url = "https://api.openai.example/v1"
api_key_env = "OPENAI_KEY_FOR_TEST"

[models.local-llama]
upstream_model = "llama3.1:8b"
base_url = "http://127.0.0.1:11434/v1"
context_window = 8192
max_output_tokens = 2048
input_usd_per_million = 0
output_usd_per_million = 0

[models.glm-4-plus]
base_url = "https://glm.example/v4"
api_key_env = "UNSET_KEY_FOR_TEST"

[tiers]
standard = ["local-llama", "gpt-4o"]
economy = ["local-llama"]
""",
        encoding="utf-8",
    )
    secrets = {"OPENAI_KEY_FOR_TEST": "sk-test"}
    catalog = load_catalog(path, base_url=None, api_key=None, secret=secrets.get)
    assert set(catalog.models) == {"gpt-4o", "local-llama"}
    assert catalog.models["gpt-4o"].api_key == "sk-test"
    assert catalog.models["gpt-4o"].output_micros_per_million == 10_000_000  # built-in price
    assert catalog.models["local-llama"].api_key is None
    assert "UNSET_KEY_FOR_TEST" in catalog.unavailable["glm-4-plus"]
    assert catalog.tiers[Tier.STANDARD] == ("local-llama", "gpt-4o")
    assert catalog.tiers[Tier.LONG_CONTEXT] == ("gpt-4o",)  # unavailable models drop out
    assert repr(catalog.models["gpt-4o"]).count("sk-test") == 0


def test_prices_are_exact_decimals(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        "[models.m]\nupstream_model='m'\ncontext_window=1000\nmax_output_tokens=10\n"
        "input_usd_per_million=0.29\noutput_usd_per_million='1.1'\n"
        "cached_input_usd_per_million=0.07\n",
        encoding="utf-8",
    )
    spec = load_catalog(path, base_url="http://x", api_key=None, secret=no_secrets).models["m"]
    assert spec.input_micros_per_million == 290_000  # not 289_999 from binary floats
    assert spec.output_micros_per_million == 1_100_000
    assert spec.cached_input_micros_per_million == 70_000
    # 1,000 prompt tokens of which 400 cached, 100 out: (600*0.29 + 400*0.07 + 100*1.1) micros.
    assert spec.cost_micros_numerator(1000, 100, 400) == 312 * 1_000_000


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[models.m]\nupstream_model = 'm'\n", "models.m: a new model needs"),
        ("[models.gpt-4o]\ncontext_window = -1\n", "models.gpt-4o.context_window"),
        ("[models.gpt-4o]\ninput_usd_per_million = 'cheap'\n", "input_usd_per_million"),
        ("[models.gpt-4o]\nprice = 1\n", "unknown key(s) price"),
        ("[tiers]\nstandard = ['nope']\n", "tiers.standard: 'nope' is not in the catalog"),
        ("[tiers]\npremium = ['gpt-4o']\n", "tiers.premium: unknown tier"),
        ("[models.gpt-4o]\ncurrency = 'EUR'\n", "one currency"),
        ("models = [", "cannot read the catalog"),
        ("surprise = 1\n", "unknown top-level key(s) surprise"),
    ],
)
def test_errors_say_where(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(CatalogError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_catalog(path, base_url="http://x", api_key=None, secret=no_secrets)


def test_the_example_catalog_in_the_repository_loads() -> None:
    path = Path(__file__).resolve().parents[2] / "examples" / "catalog.toml"
    keys = {"DEEPSEEK_API_KEY": "d", "OPENAI_API_KEY": "o"}
    catalog = load_catalog(path, base_url=None, api_key=None, secret=keys.get)
    assert catalog.tiers[Tier.STANDARD] == ("deepseek-v4-flash", "local-qwen", "gpt-4o")
    assert "ZHIPUAI_API_KEY" in catalog.unavailable["glm-4-plus"]
    assert catalog.economy_model == "local-qwen"
    assert catalog.models["gpt-4o"].cached_input_micros_per_million == 1_250_000
