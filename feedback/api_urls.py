"""API routes of the annotation domain (included under /api/v1/ by config.urls)."""

from django.conf import settings
from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from feedback import apis

urlpatterns = [
    # auth
    path("auth/token/", apis.TokenObtainApi.as_view(), name="api_token"),
    path("auth/token/revoke/", apis.TokenRevokeApi.as_view(), name="api_token_revoke"),
    path("auth/me/", apis.MeApi.as_view(), name="api_me"),
    # projects
    path("projects/", apis.ProjectListApi.as_view(), name="api_projects"),
    path("projects/create/", apis.ProjectCreateApi.as_view(), name="api_project_create"),
    path("projects/<int:project_id>/", apis.ProjectDetailApi.as_view(), name="api_project"),
    path("projects/<int:project_id>/update/", apis.ProjectUpdateApi.as_view(), name="api_project_update"),
    path("projects/<int:project_id>/members/set/", apis.MembershipSetApi.as_view(), name="api_member_set"),
    path(
        "projects/<int:project_id>/prompts/import/", apis.PromptImportApi.as_view(), name="api_prompt_import"
    ),
    path(
        "projects/<int:project_id>/candidates/import/",
        apis.CandidateImportApi.as_view(),
        name="api_candidate_import",
    ),
    # annotating
    path("projects/<int:project_id>/next/", apis.ItemNextApi.as_view(), name="api_next"),
    path("items/<int:item_id>/submit/", apis.AnnotationSubmitApi.as_view(), name="api_submit"),
    path("items/<int:item_id>/skip/", apis.ItemSkipApi.as_view(), name="api_skip"),
    path("annotations/", apis.AnnotationListApi.as_view(), name="api_annotations"),
    path("annotations/<int:annotation_id>/", apis.AnnotationDetailApi.as_view(), name="api_annotation"),
    path("annotations/<int:annotation_id>/undo/", apis.AnnotationUndoApi.as_view(), name="api_undo"),
    # review and quality
    path(
        "projects/<int:project_id>/annotations/",
        apis.ProjectAnnotationListApi.as_view(),
        name="api_project_annotations",
    ),
    path("projects/<int:project_id>/stats/", apis.ProjectStatsApi.as_view(), name="api_stats"),
    path("projects/<int:project_id>/agreement/", apis.ProjectAgreementApi.as_view(), name="api_agreement"),
    path("projects/<int:project_id>/quality/flag/", apis.ProjectQualityFlagApi.as_view(), name="api_flag"),
    path(
        "projects/<int:project_id>/leaderboard/", apis.ProjectLeaderboardApi.as_view(), name="api_leaderboard"
    ),
    path(
        "projects/<int:project_id>/leaderboard.svg",
        apis.ProjectLeaderboardPlotApi.as_view(),
        name="api_leaderboard_svg",
    ),
    path("items/<int:item_id>/gold/", apis.ItemGoldSetApi.as_view(), name="api_gold"),
    # schema and docs (Swagger UI and Redoc served from the app, no CDN)
    path("schema/", SpectacularAPIView.as_view(), name="api_schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api_schema"), name="api_docs"),
    path("redoc/", SpectacularRedocView.as_view(url_name="api_schema"), name="api_redoc"),
]

if getattr(settings, "ARBITER_BENCH_ENDPOINTS", False):
    # The load benchmark's ceiling: the same stack, no database.
    urlpatterns += [
        path("bench/next/", apis.CeilingNextApi.as_view(), name="api_bench_next"),
        path("bench/items/<int:item_id>/submit/", apis.CeilingSubmitApi.as_view(), name="api_bench_submit"),
    ]
