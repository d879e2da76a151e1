"""Pages of the inference app (included under /generation/ by config.urls)."""

from django.urls import path

from inference import views

urlpatterns = [
    path("", views.job_list, name="generation_jobs"),
    path("<int:job_id>/", views.job_detail, name="generation_job"),
    path("<int:job_id>/cancel/", views.job_cancel, name="generation_job_cancel"),
    path("<int:job_id>/resume/", views.job_resume, name="generation_job_resume"),
]
