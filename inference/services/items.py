"""Items built from a job's candidates: k samples of one version, or versions against each other."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from feedback.models import Candidate, Item, ItemCandidate
from inference.models import GenerationJob, ModelVersion, PairingMode


def items_build_for_job(
    *, job: GenerationJob, versions: Sequence[ModelVersion], prompt_ids: Sequence[int]
) -> int:
    """Group the job's free candidates (in no item yet) of these prompts into items of k.

    ``samples``: each item holds k samples of one version. ``versus``: each item holds
    candidates of different versions (round robin over the versions), built once every version
    has answered the prompt.
    """
    project = job.project
    k = project.responses_per_item
    version_ids = [v.pk for v in versions]
    free = (
        Candidate.objects.filter(prompt_id__in=list(prompt_ids), model_version_id__in=version_ids)
        .exclude(items__project=project)
        .order_by("prompt_id", "id")
        .values_list("id", "prompt_id", "model_version_id")
    )
    grouped: dict[int, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    for cid, pid, vid in free:
        grouped[pid][vid].append(cid)
    groups: list[tuple[int, list[int]]] = []
    if job.pairing == PairingMode.VERSUS:
        answered = defaultdict(set)
        for pid, vid in (
            Candidate.objects.filter(prompt_id__in=list(grouped), model_version_id__in=version_ids)
            .values_list("prompt_id", "model_version_id")
            .distinct()
        ):
            answered[pid].add(vid)
        for pid, per_version in grouped.items():
            if answered[pid] != set(version_ids):
                continue
            queues = [list(per_version.get(vid, [])) for vid in version_ids]
            while sum(1 for q in queues if q) >= 2 and sum(len(q) for q in queues) >= k:
                # round robin, the versions with the most left first: every item mixes versions
                picked: list[int] = []
                while len(picked) < k:
                    for i in sorted(range(len(queues)), key=lambda i: -len(queues[i])):
                        if queues[i] and len(picked) < k:
                            picked.append(queues[i].pop(0))
                groups.append((pid, picked))
    else:
        for pid, per_version in grouped.items():
            for cids in per_version.values():
                for start in range(0, len(cids) - k + 1, k):
                    groups.append((pid, cids[start : start + k]))
    for pid, cids in groups:
        item = Item.objects.create(
            project=project, prompt_id=pid, annotations_required=project.annotations_required
        )
        ItemCandidate.objects.bulk_create(
            ItemCandidate(item=item, candidate_id=cid, position=i) for i, cid in enumerate(cids)
        )
    return len(groups)
