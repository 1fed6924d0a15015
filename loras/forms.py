"""Input parsing for the LoRA detail page's edits (the library's filters are `loras.filters.LoRAFilterSet`).
Forms only turn request data into the arguments of a service; the rules themselves (names, tags, roles)
live in `loras.services`."""

from django import forms

from loras.models import Expert, LoRA

NAME_LENGTH_MESSAGE = "A name needs 1 to 100 characters."


class RenameForm(forms.Form):
    name = forms.CharField(
        max_length=100,
        label="Name",
        help_text="1 to 100 characters. Enter saves, Escape cancels.",
        # Only ever shown as the inline editor that replaced the heading, so it takes the focus.
        widget=forms.TextInput(attrs={"autofocus": True, "autocomplete": "off"}),
        error_messages={
            "required": NAME_LENGTH_MESSAGE,
            "max_length": NAME_LENGTH_MESSAGE + " This one has %(show_value)d.",
        },
    )

    @classmethod
    def for_lora(cls, lora: LoRA) -> "RenameForm":
        return cls(initial={"name": lora.name})


class DetailsForm(forms.Form):
    tags = forms.CharField(
        required=False,
        label="Tags",
        help_text="Separate tags with commas.",
        max_length=4000,  # the service checks each tag
        widget=forms.TextInput(attrs={"autofocus": True}),  # the editor opens with the focus here
    )
    description = forms.CharField(
        required=False, label="Description", max_length=5000, widget=forms.Textarea(attrs={"rows": 4})
    )
    preferred_weight = forms.FloatField(
        label="Preferred weight",
        min_value=0.0,
        max_value=2.0,
        help_text="From 0 to 2; the Generate form starts here.",
        widget=forms.NumberInput(attrs={"step": "0.05"}),
    )
    expert = forms.ChoiceField(
        label="Expert",
        choices=Expert.choices,
        help_text="Which Wan 2.2 expert loads it: high noise, low noise or both.",
    )

    @classmethod
    def for_lora(cls, lora: LoRA) -> "DetailsForm":
        return cls(
            initial={
                "tags": ", ".join(lora.tags),
                "description": lora.description,
                "preferred_weight": lora.preferred_weight,
                "expert": lora.expert,
            }
        )

    def clean_tags(self) -> list[str]:
        return [tag for tag in self.cleaned_data["tags"].split(",") if tag.strip()]


class ActiveForm(forms.Form):
    # A hidden field carries the state to switch to; "false" cleans to False.
    is_active = forms.BooleanField(required=False)


# The detail page's editable parts: each is saved on its own, through `services.lora_update`.
SECTION_FORMS: dict[str, type[forms.Form]] = {"name": RenameForm, "details": DetailsForm, "active": ActiveForm}
