"""Beat tasks for workspaces: the delayed deletion of objects whose rows are gone."""

from celery import shared_task

from workspaces import services


@shared_task(name="workspaces.tasks.storage_purge_due")
def storage_purge_due() -> int:
    return services.storage_purge_due()
