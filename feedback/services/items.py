"""Building items (the candidates shown together) from a project's candidates."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from django.db import transaction

from feedback.models import Candidate, Item, ItemCandidate, Project


@transaction.atomic
def items_build(*, project: Project, prompt_ids: Sequence[int] | None = None) -> int:
    """Group every candidate not yet shown in an item of this project into items of k.

    Within a prompt, candidates of different model versions are interleaved so that an item
    compares versions whenever there are several. Returns the number of items created.
    """
    k = project.responses_per_item
    free = Candidate.objects.filter(prompt__project=project).exclude(items__project=project)
    if prompt_ids is not None:
        free = free.filter(prompt_id__in=list(prompt_ids))
    by_prompt: dict[int, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    for cid, pid, vid in free.order_by("prompt_id", "id").values_list("id", "prompt_id", "model_version_id"):
        by_prompt[pid][vid].append(cid)
    created = 0
    for prompt_id, per_version in by_prompt.items():
        queues = list(per_version.values())
        ordered: list[int] = []
        while any(queues):
            for q in queues:
                if q:
                    ordered.append(q.pop(0))
        for start in range(0, len(ordered) - k + 1, k):
            item = Item.objects.create(
                project=project,
                prompt_id=prompt_id,
                annotations_required=project.annotations_required,
            )
            ItemCandidate.objects.bulk_create(
                ItemCandidate(item=item, candidate_id=cid, position=i)
                for i, cid in enumerate(ordered[start : start + k])
            )
            created += 1
    return created
