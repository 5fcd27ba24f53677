"""What a token costs in electricity: the server's wall power over its generation speed.

While the LLM generates, the whole server draws ``host.power_watts.load``; one token takes
``1 / tokens_per_second`` seconds of that, so energy per token is ``load / tokens_per_second``
joules. The same arithmetic serves sizing (predicted speed) and verify (measured speed); every
step is kept as text.
"""

from __future__ import annotations

from dataclasses import dataclass

from ailab_deploy.core.plan import Host

JOULES_PER_KWH = 3_600_000
TOKENS_PER_MILLION = 1_000_000
HOURS_PER_MONTH = 365.25 * 24 / 12  # an average month: 730.5 h


@dataclass(frozen=True)
class Comparison:
    name: str
    price_per_million_tokens: float
    ratio: float | None  # the lab's cost / the comparison price (None when that price is 0)


@dataclass(frozen=True)
class TokenCost:
    tokens_per_second: float
    load_watts: float
    price_per_kwh: float
    currency: str
    joules_per_token: float
    kwh_per_million_tokens: float
    cost_per_million_tokens: float
    steps: tuple[str, ...]
    comparison: Comparison | None = None


@dataclass(frozen=True)
class IdleCost:
    idle_watts: float
    hours: float
    kwh_per_month: float
    cost_per_month: float
    currency: str
    steps: tuple[str, ...]


def token_cost(host: Host, tokens_per_second: float, speed_source: str) -> TokenCost:
    """Energy and money per million tokens at a speed; ``speed_source`` says whose (predicted, measured)."""
    if tokens_per_second <= 0:
        raise ValueError(f"tokens/s must be positive to price a token, not {tokens_per_second:g}")
    load = host.power_watts.load
    price = host.energy_price_per_kwh
    currency = host.currency
    joules = load / tokens_per_second
    kwh = joules * TOKENS_PER_MILLION / JOULES_PER_KWH
    cost = kwh * price
    steps = [
        f"energy per token = {load:g} W (load) / {tokens_per_second:.2f} tokens/s ({speed_source}) "
        f"= {joules:.2f} J",
        f"energy per 1M tokens = {joules:.2f} J x 1,000,000 / 3,600,000 J/kWh = {kwh:.2f} kWh",
        f"cost per 1M tokens = {kwh:.2f} kWh x {price:g} {currency}/kWh = {cost:.2f} {currency}",
    ]
    comparison = None
    if host.cost_comparison is not None:
        other = host.cost_comparison
        ratio = cost / other.price_per_million_tokens if other.price_per_million_tokens > 0 else None
        comparison = Comparison(other.name, other.price_per_million_tokens, ratio)
        versus = f"{ratio:.2f}x" if ratio is not None else "n/a (free)"
        steps.append(
            f"compared with {other.name} at {other.price_per_million_tokens:g} {currency} per 1M tokens: "
            f"{cost:.2f} / {other.price_per_million_tokens:g} = {versus}"
        )
    return TokenCost(
        tokens_per_second=tokens_per_second,
        load_watts=load,
        price_per_kwh=price,
        currency=currency,
        joules_per_token=joules,
        kwh_per_million_tokens=kwh,
        cost_per_million_tokens=cost,
        steps=tuple(steps),
        comparison=comparison,
    )


def idle_month_cost(host: Host, *more: Host) -> IdleCost:
    """The electricity of keeping the server (every node of a cluster) on and idle for an average month.

    The first host's price and currency apply: one household, one meter.
    """
    watts = [host.power_watts.idle] + [other.power_watts.idle for other in more]
    idle = sum(watts)
    price = host.energy_price_per_kwh
    kwh = idle * HOURS_PER_MONTH / 1000
    cost = kwh * price
    total = f"{' + '.join(f'{w:g}' for w in watts)} = {idle:g} W" if more else f"{idle:g} W"
    steps = (
        f"idle month = {total} x {HOURS_PER_MONTH:g} h / 1000 = {kwh:.1f} kWh",
        f"cost = {kwh:.1f} kWh x {price:g} {host.currency}/kWh = {cost:.2f} {host.currency}",
    )
    return IdleCost(idle, HOURS_PER_MONTH, kwh, cost, host.currency, steps)
