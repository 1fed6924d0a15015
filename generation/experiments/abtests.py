"""Writes for blind A/B tests (models ABTest, ABPair, ABVote).

Creating a test queues, for every prompt × seed, one job with stack A and one with stack B — the same prompt, seed
and params — through `generation.services.generation_create`, all in one transaction (a problem in any job refuses
the whole test, nothing queued); at most LORASITE_ABTEST_MAX_JOBS jobs, and a dry run answers the cost. With the job
queue down the test is refused whole, nothing saved (generation/experiments/delivery.py).

Voting is blind: each member sees each pair in their own stable random order (`a_is_left`) and picks left, right
or tie; the vote is stored as A, B or tie. One vote per member per pair, changeable. Viewers vote too: they judge,
they do not generate."""

from dataclasses import dataclass

from django.conf import settings
from django.db import transaction

from generation import services as job_services
from generation.experiments import delivery
from generation.experiments.selectors import a_is_left
from generation.models import ABChoice, ABPair, ABTest, ABVote, JobStatus
from generation.services import SEED_MAX, LoRARequest
from loras.models import LoRA
from lorasite.errors import Conflict, InvalidInput, NotFound
from workspaces.models import Membership, Role
from workspaces.services import require_role

SIDES = ("left", "right", "tie")
MAX_PROMPTS = 20


@dataclass(frozen=True)
class Stack:
    loras: tuple[LoRARequest, ...]
    label: str

    def as_json(self) -> list[dict]:
        return [
            {"lora_id": e.lora_id, "weight": e.weight, "expert": e.expert, "weight_low": e.weight_low}
            for e in self.loras
        ]


def _check(*, prompts: list[str], seeds: list[int], stack_a: Stack, stack_b: Stack) -> int:
    errors: dict[str, list[str]] = {}
    if not prompts or any(not p.strip() for p in prompts):
        errors["prompts"] = ["Give at least one prompt, none of them empty"]
    elif len(prompts) > MAX_PROMPTS:
        errors["prompts"] = [f"At most {MAX_PROMPTS} prompts; {len(prompts)} were given"]
    if not seeds:
        errors["seeds"] = ["Give at least one seed"]
    elif len(set(seeds)) != len(seeds) or not all(0 <= s <= SEED_MAX for s in seeds):
        errors["seeds"] = [f"Seeds are distinct whole numbers from 0 to {SEED_MAX}"]
    if stack_a.as_json() == stack_b.as_json():
        errors["stack_b"] = ["A and B are the same stack: there is nothing to compare"]
    jobs = 2 * len(prompts) * len(seeds)
    limit = settings.LORASITE_ABTEST_MAX_JOBS
    if jobs > limit:
        errors.setdefault("seeds", []).append(f"At most {limit} jobs per A/B test; this one needs {jobs}")
    if errors:
        messages = [m for ms in errors.values() for m in ms]
        summary = messages[0] if len(messages) == 1 else f"{len(messages)} problems: " + "; ".join(messages)
        raise InvalidInput(summary, errors=errors)
    return jobs


def _label(*, actor: Membership, stack: Stack) -> str:
    """The stack's given label, else its LoRAs as 'anime v2 @ 0.8 + detail v1' ('Base model' for none)."""
    if stack.label.strip():
        return stack.label.strip()[:200]
    names = {
        lora.id: f"{lora.name} v{lora.version}"
        for lora in LoRA.objects.filter(workspace=actor.workspace, id__in=[e.lora_id for e in stack.loras])
    }
    parts = [
        names.get(e.lora_id, f"LoRA {e.lora_id}") + (f" @ {e.weight:g}" if e.weight is not None else "")
        for e in stack.loras
    ]
    return (" + ".join(parts) or "Base model")[:200]


def _queue(*, actor: Membership, test: ABTest, stack: Stack, side: str, prompt_index: int, seed: int):
    try:
        return job_services.generation_create(
            actor=actor,
            model=test.model_key,
            prompt=test.prompts[prompt_index],
            negative_prompt=test.negative_prompt,
            params={**test.params, "seed": seed},
            loras=list(stack.loras),
        )
    except InvalidInput as error:
        # A LoRA's problem is the stack's; the model's and the params' are the test's (and the same for A and B).
        errors = {f"stack_{side}.{k}" if k.startswith("loras") else k: v for k, v in error.errors.items()}
        about_stack = any(k.startswith("loras") for k in error.errors)
        message = f"Stack {side.upper()}: {error.message}" if about_stack else error.message
        raise InvalidInput(message, errors=errors) from None


def abtest_create(
    *,
    actor: Membership,
    model: str,
    prompts: list[str],
    seeds: list[int],
    stack_a: Stack,
    stack_b: Stack,
    negative_prompt: str = "",
    params: dict | None = None,
    name: str = "",
    dry_run: bool = False,
) -> tuple[ABTest, int]:
    """The test and its job count. Every job is validated as it is created; with `dry_run` nothing stays."""
    require_role(membership=actor, minimum=Role.MEMBER, action="run A/B tests")
    jobs = _check(prompts=prompts, seeds=seeds, stack_a=stack_a, stack_b=stack_b)
    params = {k: v for k, v in (params or {}).items() if k != "seed"}  # each pair has its own seed
    with transaction.atomic():
        test = ABTest(
            workspace=actor.workspace,
            created_by=actor.user,
            name=name,
            model_key=model,
            negative_prompt=negative_prompt,
            params=params,
            stack_a=stack_a.as_json(),
            stack_b=stack_b.as_json(),
            label_a=_label(actor=actor, stack=stack_a),
            label_b=_label(actor=actor, stack=stack_b),
            prompts=prompts,
            seeds=seeds,
        )
        test.full_clean()
        test.save()
        job_ids = []
        for prompt_index in range(len(prompts)):
            for seed in seeds:
                job_a = _queue(actor=actor, test=test, stack=stack_a, side="a", prompt_index=prompt_index, seed=seed)
                job_b = _queue(actor=actor, test=test, stack=stack_b, side="b", prompt_index=prompt_index, seed=seed)
                pair = ABPair(test=test, prompt_index=prompt_index, seed=seed, job_a=job_a, job_b=job_b)
                pair.full_clean()
                pair.save()
                job_ids += [job_a.id, job_b.id]
        if dry_run:
            transaction.set_rollback(True)
            return test, jobs
        delivery.broker_require(what="A/B test")
    delivery.jobs_sent_require(job_ids=job_ids, what="A/B test", abtest_id=test.id)
    return test, jobs


@transaction.atomic
def abvote_set(*, actor: Membership, pair: ABPair, side: str) -> ABVote:
    """The actor's vote on a pair, `side` as they saw it (left, right or tie); 409 until both outputs exist."""
    if pair.test.workspace_id != actor.workspace_id:  # callers fetch the pair in the actor's workspace
        raise NotFound("Pair not found.")
    if side not in SIDES:
        raise InvalidInput("A vote is left, right or tie.", errors={"choice": ["Give left, right or tie."]})
    if not (pair.job_a and pair.job_b and pair.job_a.status == pair.job_b.status == JobStatus.SUCCEEDED):
        raise Conflict("Both outputs of this pair must have succeeded before it can be voted on.")
    if side == "tie":
        choice = ABChoice.TIE
    else:
        left_is_a = a_is_left(pair_id=pair.id, user_id=actor.user_id)
        choice = ABChoice.A if (side == "left") == left_is_a else ABChoice.B
    vote = ABVote.objects.select_for_update().filter(pair=pair, user=actor.user).first() or ABVote(
        pair=pair, user=actor.user
    )
    vote.choice = choice
    vote.full_clean()
    vote.save()
    return vote
