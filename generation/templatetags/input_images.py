from django import template

from generation.inputs import job_input_url as _job_input_url
from generation.models import GenerationJob

register = template.Library()


@register.simple_tag
def job_input_url(job: GenerationJob) -> str:
    """{% job_input_url job as url %}: the signed URL of an image-to-video job's input image, or ""."""
    return _job_input_url(job=job)
