"""`config/pricing.yaml`: what each billable thing costs per month, with the date the figures were
taken, and the plan's own cost figures per stage (SPEC.md, "Costs in the plan")."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from functools import cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .config_files import add_validation_problems, read_config
from .errors import Problems
from .schema import Location

DEFAULT_PRICING = Path(__file__).resolve().parent.parent / "config" / "pricing.yaml"

Price = float  # EUR per month, excluding VAT


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerPrices(_Strict):
    taken: date = Field(description="When the figures were taken (quote it: \"2026-11-24\").")
    source: str = Field(description="Where they were taken from.")
    list_price_locations: list[Location] = Field(
        min_length=1, description="The locations where `eur_month` is the price.")
    eur_month: dict[str, Price] = Field(
        description="Server type -> its list price, EUR per month excluding VAT (Hetzner's monthly cap).")
    location_eur_month: dict[Location, dict[str, Price]] = Field(
        default={},
        description="Location -> type -> price, where a location's price differs from the list price. A location "
                    "with no price of its own is priced at the list price, marked `*` in every report (the real "
                    "bill is higher).")


@dataclass(frozen=True)
class ServerPrice:
    eur: Price | None  # None: no price for the type at all
    # Why the figure is not the location's own price ("" when it is).
    stand_in: str = ""


class OtherPrices(_Strict):
    taken: date = Field(description="When the figures were taken.")
    source: str = Field(description="Where they were taken from.")
    primary_ipv4: Price = Field(ge=0, description="A cloud server's public IPv4 (a primary IP), per month; IPv6 is free.")
    load_balancer_types: dict[str, Price] = Field(
        description="Load balancer type -> price (local-app scaled out on hcloud takes one).")
    object_storage_base: Price = Field(
        ge=0, description="Object Storage's base price (1 TB of storage and 1 TB of egress included, per project).")
    dedicated: dict[str, Price] = Field(description="Robot product (a server's `dedicated:`) -> price.")


class PlanFigure(_Strict):
    low: float = Field(ge=0, description="The low end of the plan's range (the figure itself when it gives one).")
    high: float = Field(ge=0, description="The high end.")
    currency: Literal["EUR", "USD"] = Field(description="The plan's currency for the figure.")
    note: str = Field(default="", description="What the plan says the figure is made of.")

    def shown(self) -> str:
        sign = {"EUR": "EUR ", "USD": "$"}[self.currency]
        span = f"{self.low:,.0f}" if self.low == self.high else f"{self.low:,.0f}-{self.high:,.0f}"
        return f"{sign}{span}"


class PlanStage(_Strict):
    mau: str = Field(description="The MAU the stage covers, as SPEC writes it.")
    shards: int = Field(ge=1, description="The stage's shard count: the program's figure is computed at it.")
    local: PlanFigure = Field(description="The plan's figure for the local site.")
    helsinki: PlanFigure = Field(description="The plan's figure for Helsinki (the replicas counted there, as the plan does).")
    total: PlanFigure | None = Field(default=None, description="The plan's total, where it gives one.")


class ExchangeRate(_Strict):
    """An explicit rate, for comparing a figure in another currency with ours (EUR)."""

    eur: float = Field(gt=0, description="EUR per unit of the currency.")
    taken: date = Field(description="When the rate was taken.")
    source: str = Field(description="Where the rate was read.")

    def shown(self, currency: str) -> str:
        return f"{self.eur:g} EUR per {currency}, taken {self.taken}"


class Pricing(_Strict):
    servers: ServerPrices = Field(description="The server types' prices: the one place for them.")
    other: OtherPrices = Field(description="Addresses, load balancers, object storage and the Robot servers.")
    plan_stages: dict[str, PlanStage] = Field(
        description="SPEC.md's \"Costs in the plan\" by stage label, as written: `unde-infra cost` compares the "
                    "program's figures with these, stage by stage.")
    exchange_rates: dict[Literal["USD"], ExchangeRate] = Field(
        default={},
        description="Currency -> rate, to compare the plan's figures in another currency with the program's (EUR). "
                    "None configured: such a figure is shown, never compared.")

    def server_price(self, name: str, location: str | None) -> ServerPrice:
        """What `name` costs in `location` (None: a location not known, the list price)."""
        listed = self.servers.eur_month.get(name)
        if location is None or location in self.servers.list_price_locations:
            return ServerPrice(listed)
        own = self.servers.location_eur_month.get(location, {}).get(name)  # type: ignore[call-overload]
        if own is not None:
            return ServerPrice(own)
        return ServerPrice(listed, self.list_price_stand_in(location) if listed is not None else "")

    def list_price_stand_in(self, location: str | None) -> str:
        """Why a list price stands in for `location`'s own, or "" when it is that location's."""
        if location is None or location in self.servers.list_price_locations:
            return ""
        return (f"list price ({', '.join(self.servers.list_price_locations)}): config/pricing.yaml has no "
                f"{location} price, and Hetzner charges more there")

    def exchange_rate(self, currency: str) -> ExchangeRate | None:
        return self.exchange_rates.get(currency)  # type: ignore[call-overload]

    @property
    def taken(self) -> str:
        """When the figures were taken, for the reports' heading."""
        return ", ".join(sorted({str(self.servers.taken), str(self.other.taken)}))


def load_pricing(path: Path = DEFAULT_PRICING) -> Pricing:
    return _load(path.resolve())


@cache
def _load(path: Path) -> Pricing:
    problems = Problems()
    data = read_config(path, problems)
    problems.raise_if_any(str(path))
    try:
        pricing = Pricing.model_validate(data)
    except ValidationError as exc:
        add_validation_problems(problems, "", exc)
        problems.raise_if_any(str(path))
        raise  # unreachable: raise_if_any raised
    for group, prices in (("servers.eur_month", pricing.servers.eur_month),
                          ("other.load_balancer_types", pricing.other.load_balancer_types),
                          ("other.dedicated", pricing.other.dedicated)):
        for name, price in prices.items():
            if price <= 0:
                problems.add(f"{group}.{name}", f"a price is a positive number of EUR per month (got {price})")
    for location, prices in pricing.servers.location_eur_month.items():
        for name, price in prices.items():
            where = f"servers.location_eur_month.{location}.{name}"
            if name not in pricing.servers.eur_month:
                problems.add(where, f"no list price for {name} (servers.eur_month): a type the program does not know")
            if price <= 0:
                problems.add(where, f"a price is a positive number of EUR per month (got {price})")
    for name, stage in pricing.plan_stages.items():
        for part in ("local", "helsinki", "total"):
            figure = getattr(stage, part)
            if figure is not None and figure.low > figure.high:
                problems.add(f"plan_stages.{name}.{part}", f"low {figure.low} is above high {figure.high}")
    problems.raise_if_any(str(path))
    return pricing
