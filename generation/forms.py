"""Input parsing for the Generate page.

The form turns POSTed strings into what `services.generation_create` takes (checking types, and that
a select holds one of the options it offered) and puts the errors the service answers with next to
the right inputs. Bounds, compatibility and the LoRA limit are the service's to check; the HTML
min/max are hints for the browser, not a second set of rules."""

import re
from dataclasses import dataclass, field
from itertools import zip_longest

from django import forms
from django.conf import settings
from django.http import QueryDict

from generation.inputs import DEFAULT_IMAGE_FIT, IMAGE_FITS
from generation.model_registry import BaseModel, model_registry
from generation.selectors import LoRAChoice
from generation.services import SEED_MAX, LoRARequest
from loras.models import LoRA
from lorasite.errors import ApplicationError

# The two sections of a two-expert model; a LoRA in both sections is one "both" entry (see `job_input`).
EXPERTS = ("high", "low")
SECTION_TITLES = {"high": "High-noise", "low": "Low-noise"}
_LORA_ERROR_KEY = re.compile(r"^loras\.(\d+)\.(\w+)")
# Parameters a `carry` may hold (a recipe's), by their names on the page.
CARRIED_PARAMS = ("resolution", "num_frames", "fps", "steps", "guidance", "guidance_2", "seed")
# Service error keys that are named differently on the page.
_PARAM_FIELDS = {"width": "resolution", "height": "resolution"}


def enabled_models() -> list[BaseModel]:
    return [model for model in model_registry().values() if model.enabled]


def model_for(key: str | None) -> BaseModel:
    """The model a request means: the one asked for when it exists, else the first with weights."""
    models = enabled_models()
    by_key = {model.key: model for model in models}
    if key in by_key:
        return by_key[key]
    return next((model for model in models if model.weights_present), models[0])


def expert_warning(lora: LoRA, section: str) -> str:
    """Why a LoRA may be out of place in a section: its hint names the other expert ("" when it fits). A warning,
    not an error: the hint comes from file names and metadata, and the user may know better."""
    if section not in EXPERTS or lora.expert not in EXPERTS or lora.expert == section:
        return ""
    return (
        f"'{lora.name}' is marked as a {SECTION_TITLES[lora.expert].lower()} LoRA; "
        f"in {SECTION_TITLES[section]} it may not work as intended."
    )


def recommended_params(lora: LoRA, model: BaseModel) -> dict[str, float]:
    """The LoRA's recommended settings that are inputs of this model's form (steps, guidance, guidance_2 on
    two-expert models), for "Use recommended settings"; {} when it has none, or they are meant for another model.
    (Shift is not a job parameter, so it is shown on the LoRA page only.)"""
    settings = lora.recommended_settings or {}
    if settings.get("model") not in (None, "", model.key):
        return {}
    names = ("steps", "guidance", "guidance_2") if model.two_experts else ("steps", "guidance")
    return {name: settings[name] for name in names if settings.get(name) is not None}


@dataclass
class LoRARow:
    """One LoRA in a picker section, as posted; `choice` is None when the id is not on offer."""

    index: int
    lora_id: int | None
    weight: float | None
    expert: str | None
    choice: LoRAChoice | None
    errors: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.choice.lora.name if self.choice else f"LoRA #{self.lora_id}"

    @property
    def weight_value(self) -> str:
        """The slider's value: as posted, else the LoRA's preferred weight."""
        weight = self.weight if self.weight is not None else (self.choice.lora.preferred_weight if self.choice else 1.0)
        return f"{weight:.2f}"

    @property
    def warning(self) -> str:
        return expert_warning(self.choice.lora, self.expert) if self.choice else ""


@dataclass(frozen=True)
class LoRASection:
    expert: str  # "high" | "low" | "" (single-expert models)
    title: str
    hint: str
    rows: list[LoRARow]


def _parse_rows(data: QueryDict, model: BaseModel, choices: dict[int, LoRAChoice]) -> list[LoRARow]:
    """Rows come as three parallel lists in document order (high-noise section first)."""
    rows = []
    entries = zip_longest(
        data.getlist("lora_id"), data.getlist("lora_weight"), data.getlist("lora_expert"), fillvalue=""
    )
    for raw_id, raw_weight, raw_expert in entries:
        errors = []
        try:
            lora_id = int(raw_id)
        except ValueError:
            lora_id = None
            errors.append("Pick a LoRA for this row.")
        try:
            weight = float(raw_weight) if raw_weight != "" else None
        except ValueError:
            weight = None
            errors.append("The weight must be a number.")
        choice = choices.get(lora_id)
        experts: tuple[str | None, ...] = (None,)
        if model.two_experts:
            # A row carried over from a single-expert model has no section yet: the LoRA's own hint places it,
            # and a "both" LoRA goes into both sections.
            hint = choice.lora.expert if choice else "high"
            experts = (raw_expert,) if raw_expert in EXPERTS else (EXPERTS if hint not in EXPERTS else (hint,))
        for expert in experts:
            rows.append(
                LoRARow(index=len(rows), lora_id=lora_id, weight=weight, expert=expert, choice=choice, errors=errors)
            )
    return rows


def _group_rows(rows: list[LoRARow]) -> list[list[LoRARow]]:
    """The rows of each job entry: a LoRA with a row in each section is one entry (its high-noise row first,
    whichever came first); anything else is an entry per row (the service refuses a LoRA listed twice)."""
    entries: list[list[LoRARow]] = []
    open_entries: dict[int, list[LoRARow]] = {}  # a LoRA's one-section entry, waiting for its other section
    for row in rows:
        entry = open_entries.get(row.lora_id) if row.expert in EXPERTS else None
        if entry is not None and entry[0].expert != row.expert:
            entry.append(row)
            entry.sort(key=lambda r: EXPERTS.index(r.expert))
            del open_entries[row.lora_id]
            continue
        entries.append([row])
        if row.expert in EXPERTS and row.lora_id is not None:
            open_entries.setdefault(row.lora_id, entries[-1])
    return entries


def _request(rows: list[LoRARow]) -> LoRARequest:
    if len(rows) == 1:
        return LoRARequest(lora_id=rows[0].lora_id, weight=rows[0].weight, expert=rows[0].expert)
    high, low = rows
    # Equal sliders are one weight for both experts, what the API calls `weight` alone.
    weight_low = None if low.weight == high.weight else low.weight
    return LoRARequest(lora_id=high.lora_id, weight=high.weight, expert="both", weight_low=weight_low)


class GenerateForm(forms.Form):
    model = forms.ChoiceField()
    prompt = forms.CharField(max_length=4000, widget=forms.Textarea(attrs={"rows": 3}))
    negative_prompt = forms.CharField(max_length=4000, required=False, widget=forms.Textarea(attrs={"rows": 2}))
    resolution = forms.ChoiceField(help_text="Width × height in pixels.")
    num_frames = forms.TypedChoiceField(coerce=int, label="Frames")
    fps = forms.TypedChoiceField(coerce=int, label="FPS")
    steps = forms.IntegerField()
    guidance = forms.FloatField()
    guidance_2 = forms.FloatField(label="Guidance 2 (low noise)")
    seed = forms.IntegerField(required=False, help_text="Empty: a random one.")
    # Image-to-video: the uploaded input's id (templates/generation/_input_image.html sets it) and how it is fitted.
    image = forms.IntegerField(required=False, widget=forms.HiddenInput)
    image_fit = forms.ChoiceField(
        choices=[(fit, fit) for fit in IMAGE_FITS], initial=DEFAULT_IMAGE_FIT, required=False, widget=forms.RadioSelect
    )

    def __init__(
        self,
        data: QueryDict | None = None,
        *,
        model: BaseModel,
        choices: list[LoRAChoice],
        carry: QueryDict | None = None,
    ) -> None:
        """`carry` holds the values of the form the user had before switching models: the prompts
        and LoRA rows stay, the parameters start again from the new model's defaults."""
        caps = model.capabilities
        initial = {
            "model": model.key,
            "resolution": "{}x{}".format(*caps.resolutions[0]),
            "steps": caps.default_steps,
            "guidance": caps.default_guidance,
            "guidance_2": caps.default_guidance_2,
            "num_frames": caps.frame_counts[0] if caps.frame_counts else None,
            "fps": caps.default_fps,
        }
        if carry is not None:
            initial.update(prompt=carry.get("prompt", ""), negative_prompt=carry.get("negative_prompt", ""))
            # A recipe (generation/recipes) brings its parameters too; a model switch sends none.
            initial.update({name: carry[name] for name in CARRIED_PARAMS if carry.get(name)})
        super().__init__(data, initial=initial)
        self.base_model = model
        self.models = sorted(enabled_models(), key=lambda m: not m.weights_present)  # runnable ones first
        self.lora_limit = settings.LORASITE_MAX_LORAS_PER_JOB
        self.fields["model"].choices = [(m.key, m.display_name) for m in self.models]
        self.fields["resolution"].choices = [(f"{w}x{h}", f"{w} × {h}") for w, h in caps.resolutions]
        self.fields["steps"].widget.attrs.update(min=caps.steps[0], max=caps.steps[1])
        self.fields["steps"].help_text = f"{caps.steps[0]}–{caps.steps[1]}"
        for name in ("guidance", "guidance_2"):
            self.fields[name].widget.attrs.update(min=caps.guidance_range[0], max=caps.guidance_range[1], step=0.1)
        self.fields["seed"].widget.attrs.update(min=0, max=SEED_MAX, placeholder="random")
        if model.kind == "video":
            self.fields["num_frames"].choices = [(n, str(n)) for n in caps.frame_counts]
            self.fields["fps"].choices = [(n, str(n)) for n in caps.fps]
        else:
            del self.fields["num_frames"], self.fields["fps"]
        if not model.image_input:
            del self.fields["image"], self.fields["image_fit"]
        if model.two_experts:
            self.fields["guidance"].label = "Guidance (high noise)"
        else:
            del self.fields["guidance_2"]

        self.choices = choices
        by_id = {choice.lora.id: choice for choice in choices}
        source = data if data is not None else carry
        self.lora_rows = _parse_rows(source, model, by_id) if source is not None else []
        self.lora_entries = _group_rows(self.lora_rows)  # one per LoRARequest, in the service's `loras.<n>` order
        self.lora_errors: list[str] = []

    @property
    def param_fields(self) -> list[forms.BoundField]:
        return [
            self[name]
            for name in ("resolution", "num_frames", "fps", "steps", "guidance", "guidance_2", "seed")
            if name in self.fields
        ]

    @property
    def has_usable_loras(self) -> bool:
        return any(choice.usable for choice in self.choices)

    @property
    def lora_count(self) -> int:
        """LoRAs toward the limit: one in both sections counts once, as the service counts it."""
        return len(self.lora_entries)

    def _rows_in(self, expert: str) -> list[LoRARow]:
        return [row for row in self.lora_rows if row.expert == expert]

    def lora_sections(self) -> list[LoRASection]:
        if not self.base_model.two_experts:
            return [LoRASection("", "LoRAs", "", self.lora_rows)]
        hints = {
            "high": "Early, noisy steps (transformer): composition and motion.",
            "low": "Late steps (transformer_2): detail and texture.",
        }
        return [LoRASection(expert, SECTION_TITLES[expert], hints[expert], self._rows_in(expert)) for expert in EXPERTS]

    @property
    def has_errors(self) -> bool:
        return bool(self.errors or self.lora_errors or any(row.errors for row in self.lora_rows))

    def is_valid(self) -> bool:
        return super().is_valid() and not any(row.errors for row in self.lora_rows)

    def job_input(self) -> dict:
        """The keyword arguments of `generation_create` (call only after `is_valid()`)."""
        data = self.cleaned_data
        width, height = map(int, data["resolution"].split("x"))
        params = {"width": width, "height": height, "steps": data["steps"], "guidance": data["guidance"]}
        params.update(
            {name: data[name] for name in ("guidance_2", "num_frames", "fps", "seed") if data.get(name) is not None}
        )
        if data.get("image"):  # the fit radios are always sent; the fit means something only with an image
            params.update(image=data["image"], image_fit=data["image_fit"] or DEFAULT_IMAGE_FIT)
        loras = [_request(rows) for rows in self.lora_entries]
        return {
            "model": data["model"],
            "prompt": data["prompt"],
            "negative_prompt": data["negative_prompt"],
            "params": params,
            "loras": loras,
        }

    def add_service_error(self, error: ApplicationError) -> None:
        """Put each of the service's field errors next to its input; the rest above the form."""
        if not error.errors:
            self.add_error(None, error.message)
        for key, messages in error.errors.items():
            lora_key = _LORA_ERROR_KEY.match(key)
            name = key.removeprefix("params.")
            name = _PARAM_FIELDS.get(name, name)
            for message in messages:
                if lora_key and int(lora_key.group(1)) < len(self.lora_entries):
                    rows = self.lora_entries[int(lora_key.group(1))]
                    # weight_low is the low-noise row's slider; everything else belongs to the entry's first row.
                    rows[-1 if lora_key.group(2) == "weight_low" else 0].errors.append(message)
                elif key == "loras":
                    self.lora_errors.append(message)
                elif name in self.fields:
                    if message not in self.errors.get(name, []):  # width and height share one input
                        self.add_error(name, message)
                else:
                    self.add_error(None, message)
