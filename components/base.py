"""The small base every UNDE component shares: a namespaced type token and child options."""

from __future__ import annotations

from typing import Any

import pulumi


class UndeComponent(pulumi.ComponentResource):
    """A ComponentResource typed `unde:<module>:<Name>`; its children are created with `child()`
    so that every one of them has `parent=self`."""

    TYPE: str = ""

    def __init__(self, name: str, opts: pulumi.ResourceOptions | None = None) -> None:
        if not self.TYPE:
            raise TypeError(f"{type(self).__name__} must set TYPE")
        super().__init__(self.TYPE, name, None, opts)

    def child(self, **options: Any) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(parent=self, **options)
