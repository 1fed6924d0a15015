import factory
from django.contrib.auth import get_user_model

from workspaces.models import Membership, Role, Workspace

PASSWORD = "correct horse battery staple"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    password = factory.django.Password(PASSWORD)


class WorkspaceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Workspace

    name = factory.Sequence(lambda n: f"Workspace {n}")
    slug = factory.Sequence(lambda n: f"workspace-{n}")
    # Off unless a test turns it on: an auto preview job would otherwise join every test that ingests a LoRA.
    auto_preview = False


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    workspace = factory.SubFactory(WorkspaceFactory)
    user = factory.SubFactory(UserFactory)
    role = Role.MEMBER


class LoRAFactory(factory.django.DjangoModelFactory):
    """A ready LoRA row as ingest leaves it, for tests that never read the file (pages, pairs, bulk actions)."""

    class Meta:
        model = "loras.LoRA"

    workspace = factory.SubFactory(WorkspaceFactory)
    name = factory.Sequence(lambda n: f"LoRA {n}")
    original_filename = factory.LazyAttribute(lambda lora: f"{lora.name.replace(' ', '_')}.safetensors")
    file = factory.Sequence(lambda n: f"workspaces/0/loras/{n:032x}/style.safetensors")
    file_size = 4 * 1024 * 1024
    sha256 = factory.Sequence(lambda n: f"{n:064x}")
    status = "ready"
    base_model = "wan-14b"
    rank = 16
    alpha = 8.0
    key_format = "kohya"
    dtype = "BF16"
    tensor_count = 400


class HistoryFactory(factory.django.DjangoModelFactory):
    """Writes history rows directly, so afterwards it recomputes the workspace's usage counters from them, as the
    services keep them (tests/test_usage_counters.py holds the services' upkeep equal to this rebuild)."""

    class Meta:
        abstract = True

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        from generation.usage import usage_counters_rebuild

        row = super()._create(model_class, *args, **kwargs)
        job = getattr(row, "job", row)
        usage_counters_rebuild(workspace_id=job.workspace_id)
        return row


class GenerationJobFactory(HistoryFactory):
    """A succeeded image job row (no output file), for tests of what is read about jobs: ratings, metrics."""

    class Meta:
        model = "generation.GenerationJob"

    workspace = factory.SubFactory(WorkspaceFactory)
    model_key = "wan22-a14b-demo"
    model_name = "Wan 2.2 A14B (demo)"
    kind = "image"
    prompt = factory.Sequence(lambda n: f"a lighthouse at dusk, take {n}")
    params = factory.LazyFunction(lambda: {"width": 48, "height": 32, "steps": 4, "guidance": 1.0, "seed": 1})
    status = "succeeded"


class JobLoRAFactory(HistoryFactory):
    """One LoRA of a job, snapshotted from the LoRA as generation_create does."""

    class Meta:
        model = "generation.JobLoRA"

    job = factory.SubFactory(GenerationJobFactory)
    lora = factory.SubFactory(LoRAFactory)
    position = 0
    lora_ref = factory.LazyAttribute(lambda row: row.lora.id)
    name = factory.LazyAttribute(lambda row: row.lora.name)
    version = factory.LazyAttribute(lambda row: row.lora.version)
    sha256 = factory.LazyAttribute(lambda row: row.lora.sha256)
    file_key = factory.LazyAttribute(lambda row: str(row.lora.file))
    file_size = factory.LazyAttribute(lambda row: row.lora.file_size)
    weight = 1.0
    expert = "both"


class OutputRatingFactory(HistoryFactory):
    class Meta:
        model = "generation.OutputRating"

    job = factory.SubFactory(GenerationJobFactory)
    user = factory.SubFactory(UserFactory)
    stars = 4
