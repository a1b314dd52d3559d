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
    taken: date
    source: str
    # `eur_month` is the list price in these locations; another location's price is its own
    # (`location_eur_month`), or unknown: the list price then stands in, marked as such.
    list_price_locations: list[Location] = Field(min_length=1)
    eur_month: dict[str, Price]
    location_eur_month: dict[Location, dict[str, Price]] = {}


@dataclass(frozen=True)
class ServerPrice:
    eur: Price | None  # None: no price for the type at all
    # Why the figure is not the location's own price ("" when it is).
    stand_in: str = ""


class OtherPrices(_Strict):
    taken: date
    source: str
    primary_ipv4: Price = Field(ge=0)
    load_balancer_types: dict[str, Price]
    object_storage_base: Price = Field(ge=0)
    dedicated: dict[str, Price]


class PlanFigure(_Strict):
    low: float = Field(ge=0)
    high: float = Field(ge=0)
    currency: Literal["EUR", "USD"]
    note: str = ""

    def shown(self) -> str:
        sign = {"EUR": "EUR ", "USD": "$"}[self.currency]
        span = f"{self.low:,.0f}" if self.low == self.high else f"{self.low:,.0f}-{self.high:,.0f}"
        return f"{sign}{span}"


class PlanStage(_Strict):
    mau: str
    shards: int = Field(ge=1)
    local: PlanFigure
    helsinki: PlanFigure
    total: PlanFigure | None = None


class ExchangeRate(_Strict):
    """An explicit rate, for comparing a figure in another currency with ours (EUR)."""

    eur: float = Field(gt=0)  # EUR per unit of the currency
    taken: date
    source: str

    def shown(self, currency: str) -> str:
        return f"{self.eur:g} EUR per {currency}, taken {self.taken}"


class Pricing(_Strict):
    servers: ServerPrices
    other: OtherPrices
    plan_stages: dict[str, PlanStage]
    # Currency -> rate. None configured: a figure in another currency is shown, never compared.
    exchange_rates: dict[Literal["USD"], ExchangeRate] = {}

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
