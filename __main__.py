"""unde-infra: the Pulumi program of both stacks (`pulumi up -s helsinki`, `pulumi up -s local`).

The same file runs offline under the SDK's mock monitor (`unde-infra preview`)."""

import pulumi

from components.sites import build_site, load_stack
from unde_infra.errors import TopologyError

try:
    settings, inventory = load_stack()
except TopologyError as error:
    raise pulumi.RunError(error.report()) from error

for name, value in build_site(settings, inventory).items():
    pulumi.export(name, value)
