"""API routes of the training app (included under /api/v1/ by config.urls)."""

from django.urls import path

from training import apis

urlpatterns = [
    path("training-runs/", apis.TrainingRunListApi.as_view(), name="api_training_runs"),
    path("training-runs/create/", apis.TrainingRunCreateApi.as_view(), name="api_training_run_create"),
    path("training-runs/<int:run_id>/", apis.TrainingRunDetailApi.as_view(), name="api_training_run"),
    path(
        "training-runs/<int:run_id>/cancel/",
        apis.TrainingRunCancelApi.as_view(),
        name="api_training_run_cancel",
    ),
    path(
        "training-runs/<int:run_id>/requeue/",
        apis.TrainingRunRequeueApi.as_view(),
        name="api_training_run_requeue",
    ),
    path(
        "projects/<int:project_id>/documents/",
        apis.ProjectDocumentsApi.as_view(),
        name="api_project_documents",
    ),
    path(
        "projects/<int:project_id>/training-advice/",
        apis.TrainingAdviceApi.as_view(),
        name="api_training_advice",
    ),
]
