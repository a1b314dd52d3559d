"""hcloud firewalls and their attachments, from the stack's firewall plan."""

from __future__ import annotations

import pulumi
import pulumi_hcloud as hcloud

from unde_infra.firewall import FirewallPlan

from .base import UndeComponent


class Firewalls(UndeComponent):
    TYPE = "unde:network:Firewalls"

    def __init__(
        self,
        name: str,
        plans: list[FirewallPlan],
        server_ids: dict[str, pulumi.Output[int]],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(name, opts)
        for plan in plans:
            firewall = hcloud.Firewall(
                plan.name,
                name=plan.name,
                labels={"managed-by": "unde-infra"},
                rules=[
                    hcloud.FirewallRuleArgs(
                        direction="in",
                        protocol=rule.protocol,
                        port=rule.port,
                        source_ips=list(rule.sources),
                        description=rule.description,
                    )
                    for rule in plan.rules
                ],
                opts=self.child(),
            )
            hcloud.FirewallAttachment(
                plan.name,
                firewall_id=firewall.id.apply(int),
                server_ids=[server_ids[name] for name in plan.servers],
                opts=self.child(),
            )
        self.register_outputs({"firewalls": [plan.name for plan in plans]})
