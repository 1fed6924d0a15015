"""The dashboard's experiment forms: a sweep (one LoRA and its weights as the X axis, an optional second axis, a
prompt and seed), a quick A/B test of two LoRAs, and a blind vote. They parse only; the services check the rest."""

from django import forms

from generation.experiments.abtests import SIDES, Stack
from generation.experiments.sweeps import DEFAULT_WEIGHTS, Axis
from generation.forms import enabled_models
from generation.models import SweepAxisKind
from generation.services import SEED_MAX, LoRARequest
from loras.models import LoRA

NO_SECOND_AXIS = ""


def _numbers(text: str, *, whole: bool) -> list:
    parts = [part for part in text.replace(";", ",").replace(" ", ",").split(",") if part]
    try:
        return [int(part) if whole else float(part) for part in parts]
    except ValueError:
        kind = "whole numbers" if whole else "numbers"
        raise forms.ValidationError(f"List {kind} separated by commas, e.g. 0, 0.5, 1.") from None


class SweepForm(forms.Form):
    model = forms.ChoiceField()
    prompt = forms.CharField(max_length=4000, widget=forms.Textarea(attrs={"rows": 3}))
    negative_prompt = forms.CharField(max_length=4000, required=False, widget=forms.Textarea(attrs={"rows": 2}))
    seed = forms.IntegerField(min_value=0, max_value=SEED_MAX, required=False, help_text="Empty: a random one.")
    steps = forms.IntegerField(min_value=1, required=False, help_text="Empty: the model's default.")
    lora = forms.ModelChoiceField(label="LoRA", queryset=LoRA.objects.none(), empty_label=None)
    weights = forms.CharField(
        initial=", ".join(f"{w:g}" for w in DEFAULT_WEIGHTS), help_text="The X axis: the LoRA's weights, 0–2."
    )
    y_kind = forms.ChoiceField(
        label="Second axis",
        required=False,
        choices=[(NO_SECOND_AXIS, "None"), *SweepAxisKind.choices],
    )
    y_lora = forms.ModelChoiceField(
        label="Second axis LoRA",
        queryset=LoRA.objects.none(),
        required=False,
        help_text="For a LoRA weight axis: the other LoRA.",
    )
    y_values = forms.CharField(
        label="Second axis values",
        required=False,
        help_text="Weights, steps or guidance; for versions, empty: every version of the LoRA's name.",
    )

    def __init__(self, *args, loras, versions: dict[int, list[int]], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        models = [m for m in enabled_models() if m.weights_present]
        self.fields["model"].choices = [(m.key, m.display_name) for m in models]
        self.fields["lora"].queryset = loras
        self.fields["y_lora"].queryset = loras
        self.versions = versions  # LoRA id → the ids of every version of its name, oldest first
        # From a LoRA's "Sweep" button: start on a model the LoRA fits, not merely the first one.
        picked = loras.filter(id=self.initial.get("lora")).first() if self.initial.get("lora") else None
        fitting = next((m for m in models if picked and picked.base_model in m.families), None)
        if fitting and "model" not in self.initial:
            self.initial["model"] = fitting.key

    def clean_weights(self) -> list[float]:
        return _numbers(self.cleaned_data["weights"], whole=False)

    def clean(self) -> dict:
        data = super().clean()
        kind = data.get("y_kind")
        if not kind or "lora" not in data:
            return data
        text = data.get("y_values", "")
        try:
            if kind == SweepAxisKind.VERSION and not text:
                data["y_values"] = self.versions.get(data["lora"].id, [data["lora"].id])
            else:
                data["y_values"] = _numbers(text, whole=kind in (SweepAxisKind.STEPS, SweepAxisKind.VERSION))
        except forms.ValidationError as error:
            self.add_error("y_values", error)
        if kind == SweepAxisKind.WEIGHT and not data.get("y_lora"):
            self.add_error("y_lora", "Pick the LoRA whose weight the second axis varies.")
        return data

    def sweep_input(self) -> dict:
        """The keyword arguments of `sweep_create`."""
        data = self.cleaned_data
        lora = data["lora"]
        params = {key: data[key] for key in ("seed", "steps") if data.get(key) is not None}
        loras = [LoRARequest(lora_id=lora.id)]
        kind = data.get("y_kind")
        y_axis = None
        if kind:
            other = data.get("y_lora")
            if kind == SweepAxisKind.WEIGHT:
                target = other.id
            elif kind in (SweepAxisKind.STEPS, SweepAxisKind.GUIDANCE):
                target = None
            else:
                target = lora.id
            if kind == SweepAxisKind.WEIGHT and other.id != lora.id:
                loras.append(LoRARequest(lora_id=other.id))
            y_axis = Axis(kind=kind, values=tuple(data["y_values"]), lora_id=target)
        return {
            "model": data["model"],
            "prompt": data["prompt"],
            "negative_prompt": data.get("negative_prompt", ""),
            "params": params,
            "loras": loras,
            "x_axis": Axis(kind=SweepAxisKind.WEIGHT, values=tuple(data["weights"]), lora_id=lora.id),
            "y_axis": y_axis,
        }


class ABTestForm(forms.Form):
    """A quick A/B test of two LoRAs (two versions, usually) at their weights; any two stacks go through the API."""

    model = forms.ChoiceField()
    lora_a = forms.ModelChoiceField(label="A", queryset=LoRA.objects.none(), empty_label=None)
    weight_a = forms.FloatField(label="Weight of A", min_value=0, max_value=2, initial=1.0)
    lora_b = forms.ModelChoiceField(label="B", queryset=LoRA.objects.none(), empty_label=None)
    weight_b = forms.FloatField(label="Weight of B", min_value=0, max_value=2, initial=1.0)
    prompts = forms.CharField(widget=forms.Textarea(attrs={"rows": 4}), help_text="One prompt a line.")
    seeds = forms.CharField(initial="1, 2, 3", help_text="Each prompt runs once per seed, with A and with B.")
    steps = forms.IntegerField(min_value=1, required=False, help_text="Empty: the model's default.")

    def __init__(self, *args, loras, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["model"].choices = [(m.key, m.display_name) for m in enabled_models() if m.weights_present]
        self.fields["lora_a"].queryset = loras
        self.fields["lora_b"].queryset = loras

    def clean_prompts(self) -> list[str]:
        return [line.strip() for line in self.cleaned_data["prompts"].splitlines() if line.strip()]

    def clean_seeds(self) -> list[int]:
        return _numbers(self.cleaned_data["seeds"], whole=True)

    def abtest_input(self) -> dict:
        """The keyword arguments of `abtest_create`."""
        data = self.cleaned_data

        def stack(lora: LoRA, weight: float) -> Stack:
            return Stack(loras=(LoRARequest(lora_id=lora.id, weight=weight),), label="")

        return {
            "model": data["model"],
            "prompts": data["prompts"],
            "seeds": data["seeds"],
            "params": {"steps": data["steps"]} if data.get("steps") else {},
            "stack_a": stack(data["lora_a"], data["weight_a"]),
            "stack_b": stack(data["lora_b"], data["weight_b"]),
        }


class VoteForm(forms.Form):
    pair = forms.IntegerField()
    choice = forms.ChoiceField(choices=[(side, side) for side in SIDES])
