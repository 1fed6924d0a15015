"""Prefetch (generation/scaleout.py): activating a LoRA or adding it to a recipe sends a low-priority `lora_prefetch`
to the prefetch queue of each worker the LoRA is placed on that does not have it on disk yet; routing off, nothing.
Prefetches waiting for a worker are not part of its job backlog, so they never push its jobs to the shared queue."""

import time

import pytest

from generation import scaleout, worker_registry
from generation.queues import prefetch_queue
from generation.recipes.services import recipe_create
from generation.routing import placement
from generation.services import LoRARequest
from loras.services import lora_update
from tests.factories import LoRAFactory
from workspaces.models import Role

MODEL = "wan-ti2v-demo"


@pytest.fixture
def three_workers(settings, tmp_path):
    """Three live workers serving the demo model; the third already has every LoRA of `on_disk` on disk."""
    if not settings.USING_REDIS:
        settings.VAR_DIR = tmp_path
    settings.LORASITE_ROUTING_K = 2
    stamp = time.monotonic_ns()
    names = [f"p{index}-{stamp}@host" for index in range(3)]

    def announce(on_disk: list[str]) -> list[str]:
        for index, name in enumerate(names):
            disk = on_disk if index == 2 else []
            worker_registry.announce(name=name, models=[MODEL], started=time.time(), status={"disk": disk})
        return names

    yield announce
    for name in names:
        worker_registry.withdraw(name=name)
        worker_registry.forget(name=name)


@pytest.fixture
def sent(monkeypatch):
    from generation.tasks import lora_prefetch

    calls = []
    monkeypatch.setattr(lora_prefetch, "apply_async", lambda **options: calls.append(options))
    return calls


def live_names(names: list[str]) -> list[str]:
    """`names` and any other live worker serving the model (the suite's own): placement is over all of them."""
    live = [w.name for w in worker_registry.live_workers() if MODEL in w.models]
    assert set(names) <= set(live)
    return live


@pytest.mark.django_db
def test_activating_a_lora_prefetches_it_on_its_placed_workers_that_lack_it(
    three_workers, sent, workspace, member_of, django_capture_on_commit_callbacks
):
    actor = workspace.memberships.get(user=member_of(Role.OWNER))
    lora = LoRAFactory(
        workspace=workspace, created_by=actor.user, base_model="wan-demo", module_shapes={}, is_active=False
    )
    names = three_workers(on_disk=[lora.sha256])
    placed = set(placement(lora.sha256, live_names(names), k=2))
    with django_capture_on_commit_callbacks(execute=True):
        lora_update(actor=actor, lora=lora, is_active=True)
    expected = placed - {names[2]}
    assert {call["queue"] for call in sent} == {prefetch_queue(name) for name in expected}
    assert all(call["priority"] == scaleout.PREFETCH_PRIORITY for call in sent)
    mine = [call for call in sent if call["queue"] in {prefetch_queue(name) for name in names}]
    assert mine and mine[0]["kwargs"] == {
        "sha256": lora.sha256,
        "file_key": lora.file.name,
        "size": lora.file_size,
        "model_keys": [MODEL],  # the models it fits that the worker serves (its host tier, once loaded)
    }

    sent.clear()
    with django_capture_on_commit_callbacks(execute=True):
        lora_update(actor=actor, lora=lora, description="already active: no prefetch")
    assert sent == []


@pytest.mark.django_db
def test_a_recipe_prefetches_its_loras_and_routing_off_prefetches_nothing(
    three_workers, sent, workspace, member_of, settings, django_capture_on_commit_callbacks
):
    actor = workspace.memberships.get(user=member_of(Role.OWNER))
    lora = LoRAFactory(workspace=workspace, created_by=actor.user, base_model="wan-demo", module_shapes={})
    names = three_workers(on_disk=[])
    with django_capture_on_commit_callbacks(execute=True):
        recipe_create(actor=actor, name="r", model=MODEL, prompt_template="x", loras=[LoRARequest(lora.id)])
    assert {call["queue"] for call in sent} == {
        prefetch_queue(name) for name in placement(lora.sha256, live_names(names), k=2)
    }

    sent.clear()
    settings.LORASITE_ROUTING = False
    with django_capture_on_commit_callbacks(execute=True):
        lora_update(actor=actor, lora=lora, is_active=False)
        lora_update(actor=actor, lora=lora, is_active=True)
    assert sent == []


@pytest.mark.django_db
def test_queueing_a_sweep_prefetches_its_loras(
    three_workers, sent, workspace, member_of, demo_models, monkeypatch, django_capture_on_commit_callbacks
):
    from generation.experiments.sweeps import Axis, sweep_create
    from generation.tasks import generation_run

    monkeypatch.setattr(generation_run, "apply_async", lambda **options: None)  # the cells' jobs: not this test's
    actor = workspace.memberships.get(user=member_of(Role.OWNER))
    lora = LoRAFactory(workspace=workspace, created_by=actor.user, base_model="wan-demo", module_shapes={})
    names = three_workers(on_disk=[])
    with django_capture_on_commit_callbacks(execute=True):
        sweep_create(
            actor=actor,
            model=MODEL,
            prompt="x",
            loras=[LoRARequest(lora.id)],
            x_axis=Axis(kind="weight", values=(0.5, 1.0), lora_id=lora.id),
        )
    placed = placement(lora.sha256, live_names(names), k=2)
    assert {call["queue"] for call in sent} == {prefetch_queue(name) for name in placed}
