"""The provenance a job's output carries, for the job page (the same dict as the API's `provenance`)."""

from django import template

from generation.provenance import job_provenance, parameters_text

register = template.Library()


@register.filter
def provenance_of(job) -> dict:
    return job_provenance(job)


@register.filter
def infotext(provenance: dict) -> str:
    return parameters_text(provenance)


PARAM_LABELS = {
    "width": "Width",
    "height": "Height",
    "num_frames": "Frames",
    "fps": "FPS",
    "steps": "Steps",
    "guidance": "Guidance",
    "guidance_2": "Guidance 2 (low noise)",
    "seed": "Seed",
}


@register.filter
def param_label(name: str) -> str:
    return PARAM_LABELS.get(name, name.replace("_", " ").capitalize())
