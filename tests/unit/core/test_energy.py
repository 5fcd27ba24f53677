"""Electricity per token and per idle month, against figures worked out by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from ailab_deploy.core.energy import idle_month_cost, token_cost
from ailab_deploy.core.loader import load_plan, load_plan_text
from ailab_deploy.core.plan import CostComparison, Host, PowerWatts
from ailab_deploy.core.report import LlmResult, Report, electricity, render_markdown
from ailab_deploy.core.sizing import size_plan
from ailab_deploy.errors import PlanError

REPO = Path(__file__).resolve().parents[3]
REFERENCE = load_plan(REPO / "vms.yaml").plan


def _host(idle: float, load: float, price: float, currency: str = "EUR") -> Host:
    return REFERENCE.host.model_copy(
        update={
            "power_watts": PowerWatts(idle=idle, load=load),
            "energy_price_per_kwh": price,
            "currency": currency,
        }
    )


# (load W, tokens/s, price per kWh) -> (J per token, kWh per 1M tokens, cost per 1M tokens)
TOKEN_CASES = [
    (360.0, 10.0, 0.30, 36.0, 10.0, 3.0),  # 36 J x 1e6 = 36 MJ = 10 kWh
    (250.0, 5.0, 0.29, 50.0, 13.888_889, 4.027_778),  # 50 MJ = 13.89 kWh
    (100.0, 100.0, 0.20, 1.0, 0.277_778, 0.055_556),  # 1 MJ
    (720.0, 2.0, 0.0, 360.0, 100.0, 0.0),  # free electricity still costs energy
]


@pytest.mark.parametrize(("load", "tps", "price", "joules", "kwh", "cost"), TOKEN_CASES)
def test_token_cost_table(
    load: float, tps: float, price: float, joules: float, kwh: float, cost: float
) -> None:
    result = token_cost(_host(80.0, load, price), tps, "measured")
    assert result.joules_per_token == pytest.approx(joules)
    assert result.kwh_per_million_tokens == pytest.approx(kwh, rel=1e-6)
    assert result.cost_per_million_tokens == pytest.approx(cost, rel=1e-5, abs=1e-9)
    assert result.tokens_per_second == tps and result.load_watts == load
    assert len(result.steps) == 3 and "(measured)" in result.steps[0]


# (idle W, price per kWh) -> (kWh per month, cost per month); a month is 730.5 h
IDLE_CASES = [
    (100.0, 0.29, 73.05, 21.1845),
    (1000.0, 0.10, 730.5, 73.05),
    (40.0, 0.50, 29.22, 14.61),
]


@pytest.mark.parametrize(("idle", "price", "kwh", "cost"), IDLE_CASES)
def test_idle_month_table(idle: float, price: float, kwh: float, cost: float) -> None:
    result = idle_month_cost(_host(idle, 300.0, price, "USD"))
    assert result.hours == pytest.approx(730.5)
    assert result.kwh_per_month == pytest.approx(kwh)
    assert result.cost_per_month == pytest.approx(cost)
    assert result.currency == "USD"


def test_comparison_ratio() -> None:
    host = _host(80.0, 360.0, 0.30).model_copy(
        update={"cost_comparison": CostComparison(name="hosted API", price_per_million_tokens=0.6)}
    )
    result = token_cost(host, 10.0, "predicted")  # 3.00 per 1M tokens, see the table
    assert result.comparison is not None
    assert result.comparison.ratio == pytest.approx(5.0)
    assert result.comparison.name == "hosted API"


def test_zero_speed_cannot_be_priced() -> None:
    with pytest.raises(ValueError, match="must be positive"):
        token_cost(_host(80.0, 360.0, 0.30), 0.0, "measured")


def test_reference_plan_defaults_and_sizing_uses_the_predicted_speed() -> None:
    host = REFERENCE.host
    assert (host.power_watts.idle, host.power_watts.load) == (100.0, 250.0)
    assert (host.energy_price_per_kwh, host.currency) == (0.29, "EUR")
    llm = size_plan(REFERENCE).llm
    assert llm is not None
    expected_tps = 30_715_200_000 / 5_456_870_912  # see test_sizing: 5.63 tokens/s
    assert llm.cost.tokens_per_second == pytest.approx(expected_tps)
    assert llm.cost.joules_per_token == pytest.approx(250 / expected_tps)
    # 44.42 J x 1e6 / 3.6e6 = 12.34 kWh; x 0.29 = 3.58 EUR
    assert llm.cost.cost_per_million_tokens == pytest.approx(250 / expected_tps / 3.6 * 0.29)
    assert 3.5 < llm.cost.cost_per_million_tokens < 3.7


def test_power_and_price_are_checked() -> None:
    text = (REPO / "vms.yaml").read_text()
    bad = text.replace("    idle: 100  #", "    idle: 0  #")
    assert bad != text
    with pytest.raises(PlanError, match=r"power_watts\.idle"):
        load_plan_text(bad, "vms.yaml")
    bad_currency = text.replace("  currency: EUR  #", "  currency: euro  #")
    assert bad_currency != text
    with pytest.raises(PlanError, match="three-letter currency"):
        load_plan_text(bad_currency, "vms.yaml")


def test_verify_report_prices_the_measured_speed() -> None:
    llm = LlmResult("llamacpp", "gemma3:270m", 64, 12.5, 40.0, 9.5, 35.0)  # measured 12.5 tokens/s
    host = _host(100.0, 250.0, 0.29)
    cost, idle = electricity(host, llm)
    assert cost is not None
    assert cost.tokens_per_second == 12.5  # not the prediction (40.0)
    assert cost.joules_per_token == pytest.approx(20.0)  # 250 W / 12.5 tokens/s
    assert cost.cost_per_million_tokens == pytest.approx(20.0 / 3.6 * 0.29)
    assert idle.cost_per_month == pytest.approx(21.1845)
    markdown = render_markdown(Report("ab" * 32, llm, None, (), (), {}, cost=cost, idle=idle))
    assert "## Electricity" in markdown and "12.50 tokens/s" in markdown
    no_llm, _ = electricity(host, None)
    assert no_llm is None
