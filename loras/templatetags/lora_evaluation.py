"""The LoRA page's evaluation parts: metrics (templates/loras/_metrics.html: `{% lora_metrics lora as metrics %}`, a
pair's in `_pair.html`: `{% pair_metrics pair as metrics %}`, and
the geometry of its small SVG histogram — the share of each star count, the LoRA's bar beside the base model's),
versions (`_versions.html`) and the Configuration tab (`_configuration.html`)."""

from dataclasses import dataclass

from django import template

from loras.metrics import STARS, LoRAMetrics, lora_metrics, pair_metrics
from loras.models import LoRA, LoRAPair
from loras.training import PARAMETERS, ConfigGroup, training_configuration
from loras.versions import VersionRow, lora_version_timeline

register = template.Library()

CHART_HEIGHT = 80  # px of the tallest bar (100 % of the ratings)
GROUP_WIDTH, BAR_WIDTH = 44, 16


@register.simple_tag(name="lora_metrics")
def lora_metrics_tag(lora: LoRA) -> LoRAMetrics:
    return lora_metrics(lora=lora)


@register.simple_tag(name="pair_metrics")
def pair_metrics_tag(pair: LoRAPair) -> LoRAMetrics:
    return pair_metrics(pair=pair)


@dataclass(frozen=True)
class Bar:
    x: int
    y: float
    height: float
    share: int  # percent of that side's ratings
    count: int
    series: str  # "lora" | "base"


@dataclass(frozen=True)
class StarGroup:
    stars: int
    label_x: int
    bars: tuple[Bar, ...]


@register.filter
def histogram_groups(metrics: LoRAMetrics) -> list[StarGroup]:
    """Shares rather than counts, so a LoRA with 10 ratings reads against a base model with 500."""
    groups = []
    for index, stars in enumerate(STARS):
        left = 8 + index * GROUP_WIDTH
        bars = []
        for offset, (series, figures) in enumerate((("lora", metrics.lora), ("base", metrics.base))):
            count = figures.histogram[index]
            share = count / figures.rating_count if figures.rating_count else 0.0
            height = round(share * CHART_HEIGHT, 1)
            x = left + offset * (BAR_WIDTH + 2)
            bars.append(
                Bar(
                    x=x,
                    y=CHART_HEIGHT - height + 4,
                    height=height,
                    share=round(share * 100),
                    count=count,
                    series=series,
                )
            )
        groups.append(StarGroup(stars=stars, label_x=left + BAR_WIDTH, bars=tuple(bars)))
    return groups


@register.simple_tag(name="lora_versions")
def lora_versions_tag(lora: LoRA) -> list[VersionRow]:
    return lora_version_timeline(lora=lora)


@register.simple_tag(name="lora_configuration")
def lora_configuration_tag(lora: LoRA) -> list[ConfigGroup]:
    return training_configuration(training_metadata=lora.training_metadata, training=lora.training)


@register.filter
def is_training_parameter(key: str) -> bool:
    """Shown in the Configuration tab (so the File metadata tab leaves it out)."""
    return key in PARAMETERS


CONFIGURATION_TABS = ("configuration", "record", "file")


@register.simple_tag(takes_context=True)
def configuration_tab(context: template.Context) -> str:
    """The open tab: the view's (after an edit), else ?tab= (a link without JavaScript), else Configuration."""
    tab = context.get("tab") or context["request"].GET.get("tab", "")
    return tab if tab in CONFIGURATION_TABS else CONFIGURATION_TABS[0]
