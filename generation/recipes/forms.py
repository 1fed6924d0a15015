"""The recipe page's edit form: name, prompts, and per LoRA its weight(s), expert and a Remove box (how a recipe
with a deleted LoRA is fixed). Rules are the service's; this only turns strings into its arguments and puts its
errors next to the inputs they are about."""

import re

from django import forms

from generation.model_registry import model_registry
from generation.models import Recipe
from generation.services import LoRARequest
from loras.models import Expert
from lorasite.errors import ApplicationError

_LORA_ERROR_KEY = re.compile(r"^loras\.(\d+)\.(\w+)$")


class RecipeForm(forms.Form):
    name = forms.CharField(max_length=100, label="Name")
    prompt_template = forms.CharField(
        max_length=4000,
        label="Prompt template",
        help_text="{trigger} is replaced by the LoRAs' trigger words.",
        widget=forms.Textarea(attrs={"rows": 3}),
    )
    negative_prompt = forms.CharField(
        max_length=4000, required=False, label="Negative prompt", widget=forms.Textarea(attrs={"rows": 2})
    )

    def __init__(self, data=None, *, recipe: Recipe) -> None:
        super().__init__(
            data,
            initial={
                "name": recipe.name,
                "prompt_template": recipe.prompt_template,
                "negative_prompt": recipe.negative_prompt,
            },
        )
        model = model_registry().get(recipe.model_key)
        self.two_experts = bool(model and model.two_experts)
        self.recipe_loras = list(recipe.recipe_loras.all())
        for position, recipe_lora in enumerate(self.recipe_loras):
            prefix = f"lora_{position}_"
            self.fields[prefix + "weight"] = forms.FloatField(
                label="Weight", initial=recipe_lora.weight, widget=forms.NumberInput(attrs={"step": "0.05"})
            )
            if self.two_experts:
                self.fields[prefix + "expert"] = forms.ChoiceField(
                    label="Expert", choices=Expert.choices, initial=recipe_lora.expert
                )
                self.fields[prefix + "weight_low"] = forms.FloatField(
                    label="Low-noise weight",
                    required=False,
                    initial=recipe_lora.weight_low,
                    help_text="Expert Both only; empty: the same weight.",
                    widget=forms.NumberInput(attrs={"step": "0.05"}),
                )
            self.fields[prefix + "remove"] = forms.BooleanField(label="Remove", required=False)

    def lora_fields(self) -> list[tuple]:
        """(recipe LoRA, its bound fields) per row, for the template."""
        rows = []
        for position, recipe_lora in enumerate(self.recipe_loras):
            prefix = f"lora_{position}_"
            names = ("weight", "expert", "weight_low", "remove")
            rows.append((recipe_lora, {name: self[prefix + name] for name in names if prefix + name in self.fields}))
        return rows

    def _kept(self) -> list[int]:
        return [i for i in range(len(self.recipe_loras)) if not self.cleaned_data.get(f"lora_{i}_remove")]

    def service_arguments(self) -> dict:
        """The keyword arguments of `recipe_update` (call after `is_valid()`)."""
        data = self.cleaned_data
        loras = []
        for position in self._kept():
            prefix = f"lora_{position}_"
            expert = data.get(prefix + "expert") or self.recipe_loras[position].expert
            loras.append(
                LoRARequest(
                    lora_id=self.recipe_loras[position].lora_ref,
                    weight=data[prefix + "weight"],
                    expert=expert,
                    weight_low=data.get(prefix + "weight_low") if expert == "both" else None,
                )
            )
        return {
            "name": data["name"],
            "prompt_template": data["prompt_template"],
            "negative_prompt": data["negative_prompt"],
            "loras": loras,
        }

    def add_service_error(self, error: ApplicationError) -> None:
        """`loras.<n>.<field>` counts the LoRAs kept; the rest go next to their field or above the form."""
        kept = self._kept()
        placed = False
        for key, messages in error.errors.items():
            match = _LORA_ERROR_KEY.match(key)
            field = key
            if match and int(match.group(1)) < len(kept):
                position, name = kept[int(match.group(1))], match.group(2)
                # What is wrong with the LoRA itself (deleted, inactive…) is said above the form, with its name.
                field = None if name == "lora_id" else f"lora_{position}_{name}"
            if field is None or field in self.fields:
                for message in messages:
                    self.add_error(field, message)
                placed = True
        if not placed:
            self.add_error(None, error.message)
