"""The policy pack: `pulumi preview --policy-pack policies`.

Each rule of policies/rules.py becomes a stack validation policy; the offline preview runs the
very same functions (unde_infra/preview.py)."""

from pulumi_policy import EnforcementLevel, PolicyPack, StackValidationPolicy

from policies.rules import RULES, Rule, enforcement_of, load_policy_config
from policies.views import context_for, from_policy_resource, stack_from_urn

LEVELS = {
    "mandatory": EnforcementLevel.MANDATORY,
    "advisory": EnforcementLevel.ADVISORY,
    "disabled": EnforcementLevel.DISABLED,
}


def stack_policy(rule: Rule) -> StackValidationPolicy:
    def validate(args, report_violation) -> None:
        views = [from_policy_resource(r) for r in args.resources]
        if not views:
            return
        ctx = context_for(stack_from_urn(views[0].urn))
        for urn, message in rule.check(views, ctx):
            report_violation(message, urn or None)

    return StackValidationPolicy(name=rule.name, description=rule.description, validate=validate)


PACK_NAME = "unde-infra-policies"


def pack_arguments() -> dict:
    """What PolicyPack is built from; the tests hand the same to pulumi_policy's analyzer."""
    config = load_policy_config()
    return {
        "name": PACK_NAME,
        "policies": [stack_policy(rule) for rule in RULES],
        "enforcement_level": EnforcementLevel.MANDATORY,
        "initial_config": {rule.name: LEVELS[enforcement_of(rule, config)] for rule in RULES},
    }


if __name__ == "__main__":
    PolicyPack(**pack_arguments())
