"""`config/pricing.yaml`: what each billable thing costs per month, with the date the figures were
taken, and the plan's own cost figures per stage (SPEC.md, "Costs in the plan")."""

from __future__ import annotations

from datetime import date
from functools import cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .config_files import add_validation_problems, read_config
from .errors import Problems

DEFAULT_PRICING = Path(__file__).resolve().parent.parent / "config" / "pricing.yaml"

Price = float  # EUR per month, excluding VAT


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerPrices(_Strict):
    taken: date
    source: str
    eur_month: dict[str, Price]


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


class Pricing(_Strict):
    servers: ServerPrices
    other: OtherPrices
    plan_stages: dict[str, PlanStage]

    def server_type(self, name: str) -> Price | None:
        return self.servers.eur_month.get(name)

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
    for name, stage in pricing.plan_stages.items():
        for part in ("local", "helsinki", "total"):
            figure = getattr(stage, part)
            if figure is not None and figure.low > figure.high:
                problems.add(f"plan_stages.{name}.{part}", f"low {figure.low} is above high {figure.high}")
    problems.raise_if_any(str(path))
    return pricing
