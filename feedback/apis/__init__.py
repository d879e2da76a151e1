"""REST API of the annotation domain (DRF), under /api/v1/.

One APIView per operation with nested Input/Output serializers; each view fetches, authorises
(`feedback.policies`), calls one service or selector, and serialises. Errors are ``{"code", "message"}``
(feedback.api_support.exception_handler).

The views live in submodules, by area, and are re-exported here (``feedback.api_urls`` uses ``apis.<View>``):

- ``auth``: token obtain and revoke, me.
- ``projects``: list, create, show, update projects; set members.
- ``imports``: prompt and candidate imports (file or JSON rows).
- ``annotating``: next, submit, skip, undo, annotation lists and detail, and the hand-built hot-path bodies.
- ``quality``: stats, agreement, quality flags, gold items, leaderboard (JSON and SVG).
- ``bench``: the framework's ceiling (load benchmark only, no database).
"""

from __future__ import annotations

from feedback.apis.annotating import (
    AnnotationDetailApi,
    AnnotationListApi,
    AnnotationOutputSerializer,
    AnnotationSubmitApi,
    AnnotationUndoApi,
    ItemNextApi,
    ItemSkipApi,
    LeaseOutputSerializer,
    ProjectAnnotationListApi,
    SubmitInputSerializer,
    annotation_as_dict,
    lease_as_dict,
)
from feedback.apis.auth import MeApi, TokenObtainApi, TokenRevokeApi
from feedback.apis.bench import CeilingNextApi, CeilingSubmitApi
from feedback.apis.imports import CandidateImportApi, PromptImportApi
from feedback.apis.projects import (
    MembershipSetApi,
    ProjectCreateApi,
    ProjectDetailApi,
    ProjectListApi,
    ProjectOutputSerializer,
    ProjectSettingsInputSerializer,
    ProjectUpdateApi,
)
from feedback.apis.quality import (
    ItemGoldSetApi,
    ProjectAgreementApi,
    ProjectLeaderboardApi,
    ProjectLeaderboardPlotApi,
    ProjectQualityFlagApi,
    ProjectStatsApi,
)

__all__ = [
    "AnnotationDetailApi",
    "AnnotationListApi",
    "AnnotationOutputSerializer",
    "AnnotationSubmitApi",
    "AnnotationUndoApi",
    "CandidateImportApi",
    "CeilingNextApi",
    "CeilingSubmitApi",
    "ItemGoldSetApi",
    "ItemNextApi",
    "ItemSkipApi",
    "LeaseOutputSerializer",
    "MeApi",
    "MembershipSetApi",
    "ProjectAgreementApi",
    "ProjectAnnotationListApi",
    "ProjectCreateApi",
    "ProjectDetailApi",
    "ProjectLeaderboardApi",
    "ProjectLeaderboardPlotApi",
    "ProjectListApi",
    "ProjectOutputSerializer",
    "ProjectQualityFlagApi",
    "ProjectSettingsInputSerializer",
    "ProjectStatsApi",
    "ProjectUpdateApi",
    "PromptImportApi",
    "SubmitInputSerializer",
    "TokenObtainApi",
    "TokenRevokeApi",
    "annotation_as_dict",
    "lease_as_dict",
]
