"""The library's one filter declaration. The API's query parameters (`GET …/loras/`) and the library page's
filter form are both this FilterSet; `selectors.lora_list` applies it."""

from typing import NamedTuple

import django_filters
from django import forms
from django.core.validators import RegexValidator
from django.db.models import F, OrderBy, Q, QuerySet

from loras.hashes import is_hash_query
from loras.lora_inspect import FAMILIES
from loras.models import Expert, LoRA, Status


class Ordering(NamedTuple):
    label: str
    order_by: tuple[str | OrderBy, ...]


# In the order the page's Sort menu offers them; the first is the default.
ORDERINGS: dict[str, Ordering] = {
    "-created": Ordering("Newest first", ("-created_at", "-id")),
    "created": Ordering("Oldest first", ("created_at", "id")),
    "name": Ordering("Name A–Z", ("name", "version")),
    "-name": Ordering("Name Z–A", ("-name", "-version")),
    "-size": Ordering("Largest first", ("-file_size", "-id")),
    "size": Ordering("Smallest first", ("file_size", "id")),
    # Never-used LoRAs sort as the least recently used, on PostgreSQL as on SQLite.
    "-last_used": Ordering("Recently used", (F("last_used_at").desc(nulls_last=True), "-id")),
    "last_used": Ordering("Least recently used", (F("last_used_at").asc(nulls_first=True), "id")),
}
DEFAULT_ORDERING = next(iter(ORDERINGS))


def _hash_prefix(value: str) -> Q:
    """Rows whose sha256, AutoV2, AutoV3 or BLAKE3 starts with `value` (stored lowercase)."""
    prefix = value.strip().lower()
    return (
        Q(sha256__startswith=prefix)
        | Q(autov2__startswith=prefix)
        | Q(autov3__startswith=prefix)
        | Q(blake3__startswith=prefix)
    )


class LoRAFilterSet(django_filters.FilterSet):
    """Search, filters and sort of a workspace's LoRAs. A value that does not validate is left out of the
    filtering (django-filter's own behaviour) and named in `errors`: the page shows it next to its field,
    the API answers 400 with it."""

    search = django_filters.CharFilter(
        method="filter_search",
        max_length=100,
        label="Search",
        widget=forms.TextInput(
            attrs={"type": "search", "placeholder": "Name, tag, trigger word, file name, description or hash"}
        ),
    )
    base_model = django_filters.ChoiceFilter(
        choices=list(FAMILIES.items()), empty_label="Any model", label="Base model"
    )
    expert = django_filters.ChoiceFilter(choices=Expert.choices, empty_label="Any expert", label="Expert")
    active = django_filters.TypedChoiceFilter(
        field_name="is_active",
        choices=[("", "Any"), ("true", "Active"), ("false", "Inactive")],
        coerce=lambda value: value == "true",
        label="Active",
    )
    tag = django_filters.CharFilter(
        method="filter_tag",
        max_length=64,
        label="Tag",
        # The page renders the datalist of the workspace's tags.
        widget=forms.TextInput(attrs={"list": "library-tags", "placeholder": "Any tag"}),
    )
    hash = django_filters.CharFilter(
        method="filter_hash",
        min_length=8,
        max_length=64,
        validators=[RegexValidator(r"^[0-9a-fA-F]+$", "A hash is hexadecimal digits.")],
        label="Hash",
        # A prefix (8+ hex digits) of the sha256, AutoV2, AutoV3 or BLAKE3.
        widget=forms.TextInput(attrs={"placeholder": "8+ hex digits", "spellcheck": "false"}),
    )
    status = django_filters.ChoiceFilter(choices=Status.choices, empty_label="Any status", label="Status")
    ordering = django_filters.ChoiceFilter(
        method="filter_ordering",
        choices=[(value, ordering.label) for value, ordering in ORDERINGS.items()],
        empty_label=None,
        label="Sort",
    )

    class Meta:
        model = LoRA
        fields: list[str] = []  # every filter is declared above

    def filter_search(self, queryset: QuerySet[LoRA], name: str, term: str) -> QuerySet[LoRA]:
        # A pasted hash (Civitai's AutoV2 in a prompt, a sha256) finds its file too.
        by_hash = _hash_prefix(term) if is_hash_query(term) else Q(pk__in=[])
        return queryset.filter(
            Q(name__icontains=term)
            | Q(original_filename__icontains=term)
            | Q(tags__icontains=term)
            | Q(trigger_words__icontains=term)
            | Q(description__icontains=term)
            | by_hash
        )

    def filter_hash(self, queryset: QuerySet[LoRA], name: str, value: str) -> QuerySet[LoRA]:
        return queryset.filter(_hash_prefix(value))

    def filter_tag(self, queryset: QuerySet[LoRA], name: str, tag: str) -> QuerySet[LoRA]:
        # tags is a JSON list of strings: match one whole element, on PostgreSQL as on SQLite.
        return queryset.filter(tags__icontains=f'"{tag}"')

    def filter_ordering(self, queryset: QuerySet[LoRA], name: str, value: str) -> QuerySet[LoRA]:
        return queryset.order_by(*ORDERINGS[value].order_by)

    def filter_queryset(self, queryset: QuerySet[LoRA]) -> QuerySet[LoRA]:
        # The default order first; a chosen one replaces it.
        return super().filter_queryset(queryset.order_by(*ORDERINGS[DEFAULT_ORDERING].order_by))

    def valid_data(self) -> dict[str, str]:
        """The submitted values of the filters that validated, as given (for the page, which ignores bad ones)."""
        self.form.is_valid()
        return {name: self.data[name] for name in self.form.cleaned_data if self.data.get(name) not in (None, "")}

    @property
    def narrows(self) -> bool:
        """Whether anything but the sort order is chosen (an empty result is then "no match", not "no LoRAs yet")."""
        return bool(set(self.valid_data()) - {"ordering"})
