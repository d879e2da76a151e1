"""API routes of snapshots and exports (included under /api/v1/ by config.urls)."""

from django.urls import path

from feedback.exports import apis

urlpatterns = [
    path("snapshots/", apis.SnapshotListApi.as_view(), name="api_snapshots"),
    path("snapshots/preview/", apis.SnapshotPreviewApi.as_view(), name="api_snapshot_preview"),
    path("snapshots/create/", apis.SnapshotCreateApi.as_view(), name="api_snapshot_create"),
    path("snapshots/<int:snapshot_id>/", apis.SnapshotDetailApi.as_view(), name="api_snapshot"),
    path("snapshots/<int:snapshot_id>/write/", apis.SnapshotWriteApi.as_view(), name="api_snapshot_write"),
    path("snapshots/<int:snapshot_id>/download.tar", apis.SnapshotTarApi.as_view(), name="api_snapshot_tar"),
    path("snapshots/<int:snapshot_id>/push/", apis.SnapshotPushApi.as_view(), name="api_snapshot_push"),
    path(
        "snapshots/<int:snapshot_id>/files/<path:name>",
        apis.SnapshotFileApi.as_view(),
        name="api_snapshot_file",
    ),
]
