from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Prefetch, QuerySet
from django.utils import timezone

from generation.models import GenerationJob, JobLoRA
from lorasite.errors import NotFound
from lorasite.object_store import get_object_store
from workspaces.models import Workspace


def job_list(*, workspace: Workspace, status: str = "", lora_id: int | None = None) -> QuerySet[GenerationJob]:
    queryset = (
        GenerationJob.objects.filter(workspace=workspace)
        .select_related("created_by")
        .prefetch_related(Prefetch("job_loras", queryset=JobLoRA.objects.select_related("lora")))
    )
    if status:
        queryset = queryset.filter(status=status)
    if lora_id is not None:
        queryset = queryset.filter(job_loras__lora_ref=lora_id).distinct()
    return queryset.order_by("-created_at")


def job_get(*, workspace: Workspace, job_id) -> GenerationJob:
    try:
        return job_list(workspace=workspace).get(id=job_id)
    except (GenerationJob.DoesNotExist, ValueError):
        raise NotFound("Job not found.") from None


def job_output_urls(*, job: GenerationJob) -> dict[str, str | datetime | None]:
    """Signed URLs (≤ 1 hour) for the job's output and poster, served inline for the player."""
    if not job.output_key:
        return {"output_url": None, "poster_url": None, "expires_at": None}
    store = get_object_store()
    expires_in = settings.LORASITE_SIGNED_URL_SECONDS
    urls = {
        name: store.download_url(key, filename=key.rsplit("/", 1)[-1], expires_in=expires_in, inline=True) if key else None
        for name, key in (("output_url", job.output_key), ("poster_url", job.poster_key))
    }
    return {**urls, "expires_at": timezone.now() + timedelta(seconds=expires_in)}
