"""Input parsing for the LoRA detail page's edits (the library's filters are `loras.filters.LoRAFilterSet`).
Forms only turn request data into the arguments of a service; the rules themselves (names, tags, roles)
live in `loras.services`."""

from django import forms

from loras.models import Expert, LoRA
from loras.recommended import SETTING_KEYS
from loras.training import PARAMETERS

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


class TriggerWordsForm(forms.Form):
    trigger_words = forms.CharField(
        required=False,
        label="Trigger words",
        help_text="Separate words or phrases with commas; each up to 64 characters. Enter saves, Escape cancels.",
        max_length=4000,  # the service checks each word
        widget=forms.TextInput(attrs={"autofocus": True, "autocomplete": "off"}),
    )

    @classmethod
    def for_lora(cls, lora: LoRA) -> "TriggerWordsForm":
        return cls(initial={"trigger_words": ", ".join(lora.trigger_words)})

    def clean_trigger_words(self) -> list[str]:
        return [word for word in self.cleaned_data["trigger_words"].split(",") if word.strip()]


class RecommendedForm(forms.Form):
    """The numbers are optional; the service checks them against the models the LoRA fits, and its message (naming
    the setting) shows above the form."""

    steps = forms.IntegerField(required=False, label="Steps", widget=forms.NumberInput(attrs={"autofocus": True}))
    guidance = forms.FloatField(required=False, label="Guidance", widget=forms.NumberInput(attrs={"step": "0.1"}))
    guidance_2 = forms.FloatField(
        required=False,
        label="Guidance 2 (low noise)",
        help_text="Two-expert models only.",
        widget=forms.NumberInput(attrs={"step": "0.1"}),
    )
    shift = forms.FloatField(
        required=False, label="Shift", help_text="Flow shift.", widget=forms.NumberInput(attrs={"step": "0.1"})
    )
    is_distill = forms.BooleanField(
        required=False, label="Distill LoRA", help_text="Step-distilled (lightx2v, Lightning, CausVid…): few steps."
    )

    @classmethod
    def for_lora(cls, lora: LoRA) -> "RecommendedForm":
        return cls(initial={**lora.recommended_settings, "is_distill": lora.is_distill})

    def clean(self) -> dict:
        # What `lora_update` takes; the service's errors come back keyed `recommended_settings.<field>`.
        data = super().clean()
        settings = {key: data[key] for key in SETTING_KEYS if data.get(key) is not None}
        return {"recommended_settings": settings, "is_distill": data.get("is_distill", False)}


# The detail page's editable parts: each is saved on its own, through `services.lora_update`.
SECTION_FORMS: dict[str, type[forms.Form]] = {
    "name": RenameForm,
    "details": DetailsForm,
    "active": ActiveForm,
    "triggers": TriggerWordsForm,
    "recommended": RecommendedForm,
}


class PairForm(forms.Form):
    """ "Pair with X": the proposed partner and the role of the LoRA whose page it is."""

    partner = forms.IntegerField(min_value=1)
    role = forms.ChoiceField(choices=[(Expert.HIGH, "High noise"), (Expert.LOW, "Low noise")])


# The library's bulk bar: `services.lora_bulk_update`'s actions and delete, as the menu words them.
BULK_ACTIONS = (
    ("tag", "Add tags"),
    ("untag", "Remove tags"),
    ("activate", "Activate"),
    ("deactivate", "Deactivate"),
    ("delete", "Delete…"),
    ("add_to_recipe", "Add to recipe"),
)


class SelectedIds(forms.Field):
    """The selected checkboxes: each value an id, or a pair card's "high,low"."""

    def to_python(self, value) -> list[int]:
        try:
            return [int(part) for item in value or [] for part in str(item).split(",") if part.strip()]
        except ValueError:
            raise forms.ValidationError("The selection holds something that is not a LoRA id.") from None

    def validate(self, value: list[int]) -> None:
        if not value:
            raise forms.ValidationError("Select at least one LoRA.")


class BulkForm(forms.Form):
    ids = SelectedIds(widget=forms.MultipleHiddenInput)
    action = forms.ChoiceField(choices=BULK_ACTIONS)
    tags = forms.CharField(required=False, max_length=4000)
    recipe = forms.IntegerField(required=False, min_value=1)
    confirmed = forms.BooleanField(required=False)

    def clean(self) -> dict:
        data = super().clean()
        if data.get("action") == "add_to_recipe" and not data.get("recipe"):
            self.add_error("recipe", "Choose the recipe to add the LoRAs to.")
        return data

    def clean_tags(self) -> list[str]:
        return [tag for tag in self.cleaned_data["tags"].split(",") if tag.strip()]


class TrainingRecordForm(forms.Form):
    """The training record's editor on the Configuration tab: three fields and the hyperparameters as lines of
    `name: value` (the tab's parameter names). Values become numbers, Yes/No booleans or comma-separated lists by
    the parameter's kind; `loras.training.training_record_clean` has the last word."""

    dataset = forms.CharField(required=False, max_length=500, label="Dataset", help_text="Its name.")
    dataset_link = forms.CharField(
        required=False, max_length=500, label="Dataset link", help_text="An http:// or https:// link."
    )
    base_model_version = forms.CharField(
        required=False, max_length=500, label="Base model version", help_text="e.g. Wan 2.2 T2V-A14B."
    )
    hyperparameters = forms.CharField(
        required=False,
        max_length=20000,
        label="Hyperparameters",
        help_text="One per line, name: value — e.g. learning_rate: 1e-4, epochs: 10, gradient_checkpointing: yes.",
        widget=forms.Textarea(attrs={"rows": 6, "spellcheck": "false", "class": "mono"}),
    )

    @classmethod
    def for_lora(cls, lora: LoRA) -> "TrainingRecordForm":
        record = lora.training
        lines = [
            f"{key}: {', '.join(map(str, value)) if isinstance(value, list) else value}"
            for key, value in (record.get("hyperparameters") or {}).items()
        ]
        initial = {key: record.get(key, "") for key in ("dataset", "dataset_link", "base_model_version")}
        return cls(initial={**initial, "hyperparameters": "\n".join(lines)})

    def clean_hyperparameters(self) -> dict:
        parameters, problems = {}, []
        for number, line in enumerate(self.cleaned_data["hyperparameters"].splitlines(), start=1):
            if not line.strip():
                continue
            name, separator, text = line.replace("=", ":", 1).partition(":")
            name, text = name.strip(), text.strip()
            if not separator or not name:
                problems.append(f"Line {number}: write name: value.")
            elif name not in PARAMETERS:
                problems.append(f"Line {number}: '{name}' is not a known parameter.")
            else:
                parameters[name] = _typed(text, PARAMETERS[name].kind)
        if problems:
            raise forms.ValidationError(problems)
        return parameters

    def record(self) -> dict:
        return {key: value for key, value in self.cleaned_data.items() if value not in ("", {})}


def _typed(text: str, kind: str):
    """The text as the parameter's kind, or the text itself for the service to refuse by name."""
    if kind == "boolean":
        return {"yes": True, "true": True, "1": True, "no": False, "false": False, "0": False}.get(text.lower(), text)
    if kind == "list":
        return [part.strip() for part in text.split(",") if part.strip()]
    if kind in ("number", "integer"):
        try:
            return float(text.replace(",", ""))  # an integer parameter's 2.5 reaches the service, which refuses it
        except ValueError:
            return text
    return text
