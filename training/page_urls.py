"""Pages of the training app (included under /training/ by config.urls)."""

from django.urls import path

from training import views

urlpatterns = [
    path("", views.run_list, name="training_runs"),
    path("runs/<int:run_id>/", views.run_detail, name="training_run"),
    path("runs/<int:run_id>/cancel/", views.run_cancel, name="training_run_cancel"),
    path("runs/<int:run_id>/requeue/", views.run_requeue, name="training_run_requeue"),
    path("projects/<int:project_id>/documents/", views.documents_upload, name="training_documents_upload"),
]
