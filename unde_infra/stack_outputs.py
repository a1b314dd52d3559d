"""`config/offline-stack-outputs.yaml`: what the offline preview answers for the helsinki stack's
outputs when only the local stack is previewed. The local stack writes these values into
WireGuard endpoints and SSH connections, so they are checked by kind like every config file."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from . import validators
from .config_files import add_validation_problems
from .errors import Problems


class HelsinkiOutputs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    # The names are the stack outputs' own (noqa: N815).
    networkId: int = Field(ge=1, description="The Helsinki network's hcloud id.")  # noqa: N815
    gatewayPublicAddress: str = Field(description="helsinki-gw's public IPv4: the tunnels' endpoint.")  # noqa: N815
    gatewayPrivateAddress: str = Field(description="helsinki-gw's private address (RFC 1918).")  # noqa: N815
    gatewaySshEndpoint: str = Field(description="How SSH reaches helsinki-gw as a jump host: user@host:port.")  # noqa: N815
    gatewayPublicAddress6: str = Field(description="helsinki-gw's public IPv6 (the shards reach it over IPv6).")  # noqa: N815
    witnessPublicAddress: str = Field(description="The etcd witness's public IPv4 (local-etcd-1's direct tunnel).")  # noqa: N815
    standbyEntryAddress: str = Field(description="standby-api's public IPv4: where the entry record fails over to.")  # noqa: N815
    sshKeyIds: list[str] = Field(min_length=1, description="The admin keys' hcloud ids (the helsinki stack owns them).")  # noqa: N815

    @field_validator("gatewayPublicAddress", "witnessPublicAddress", "standbyEntryAddress")
    @classmethod
    def _ipv4(cls, value: str) -> str:
        return str(validators.ipv4_address(value))

    @field_validator("gatewayPrivateAddress")
    @classmethod
    def _private(cls, value: str) -> str:
        return str(validators.private_ipv4_address(value))

    @field_validator("gatewayPublicAddress6")
    @classmethod
    def _ipv6(cls, value: str) -> str:
        address = validators.ip_any_address(value)
        if address.version != 6:
            raise ValueError(f"{address} is not an IPv6 address")
        return str(address)

    @field_validator("gatewaySshEndpoint")
    @classmethod
    def _ssh_endpoint(cls, value: str) -> str:
        user, at, rest = value.partition("@")
        host, colon, port = rest.rpartition(":")
        if not at or not colon:
            raise ValueError("user@host:port")
        validators.user_name(user)
        validators.host(host)
        validators.port(int(port) if validators.ASCII_DIGITS.match(port) else port)
        return value

    @field_validator("sshKeyIds")
    @classmethod
    def _ids(cls, value: list[str]) -> list[str]:
        return [validators.digits(v, "hcloud ssh key ids") for v in value]


def check_stack_outputs(data: Any, source: str) -> dict[str, dict[str, Any]]:
    problems = Problems()
    if not isinstance(data, dict) or set(data) != {"helsinki"}:
        problems.add("", "a mapping with one key, helsinki: the outputs of the helsinki stack")
        problems.raise_if_any(source)
    try:
        HelsinkiOutputs.model_validate(data["helsinki"])
    except ValidationError as exc:
        add_validation_problems(problems, "helsinki", exc)
    problems.raise_if_any(source)
    return data
