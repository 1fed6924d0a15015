"""The compare page's A/B part (templates/generation/experiments/_compare_abtests.html): the A/B tests between the
compared LoRAs, with their win rates and binomial verdicts, and "Quick A/B test" pre-filled with two of them."""

from django import template

from generation.experiments.selectors import MIN_DECISIVE_VOTES, abtests_between
from generation.experiments.stats import ALPHA
from workspaces.models import Membership, Role

register = template.Library()


@register.inclusion_tag("generation/experiments/_compare_abtests.html")
def compare_abtests(membership: Membership, rows: list) -> dict:
    """`rows` are the compare page's (each with `.lora`)."""
    loras = [row.lora for row in rows]
    return {
        "workspace": membership.workspace,
        "can_run": membership.has_role(Role.MEMBER),
        "loras": loras,
        "tests": abtests_between(workspace=membership.workspace, lora_ids=[lora.id for lora in loras]),
        "alpha": ALPHA,
        "minimum": MIN_DECISIVE_VOTES,
    }
