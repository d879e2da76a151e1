"""Export pages (included under /exports/ by config.urls)."""

from django.urls import path

from feedback.exports import views

app_name = "exports"

urlpatterns = [
    path("", views.snapshot_index, name="index"),
    path("<int:snapshot_id>/", views.snapshot_detail, name="detail"),
    path("<int:snapshot_id>/write/", views.snapshot_rewrite, name="rewrite"),
    path("<int:snapshot_id>/download.tar", views.snapshot_tar, name="tar"),
    path("<int:snapshot_id>/files/<path:name>", views.snapshot_file, name="file"),
]
