"""API routes of the inference app (included under /api/v1/ by config.urls)."""

from django.urls import path

from inference import apis

urlpatterns = [
    path("model-versions/", apis.ModelVersionListApi.as_view(), name="api_model_versions"),
    path("generation-jobs/", apis.GenerationJobListApi.as_view(), name="api_generation_jobs"),
    path("generation-jobs/create/", apis.GenerationJobCreateApi.as_view(), name="api_generation_job_create"),
    path("generation-jobs/<int:job_id>/", apis.GenerationJobDetailApi.as_view(), name="api_generation_job"),
    path(
        "generation-jobs/<int:job_id>/cancel/",
        apis.GenerationJobCancelApi.as_view(),
        name="api_generation_job_cancel",
    ),
    path(
        "generation-jobs/<int:job_id>/resume/",
        apis.GenerationJobResumeApi.as_view(),
        name="api_generation_job_resume",
    ),
]
