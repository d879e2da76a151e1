from django.urls import path

from feedback import views

urlpatterns = [
    path("", views.home, name="home"),
    path("projects/<slug:slug>/annotate/", views.annotate, name="annotate"),
    path("projects/<slug:slug>/annotate/submit/", views.annotate_submit, name="annotate_submit"),
    path("projects/<slug:slug>/annotate/skip/", views.annotate_skip, name="annotate_skip"),
    path("projects/<slug:slug>/annotate/undo/", views.annotate_undo, name="annotate_undo"),
    path("projects/<slug:slug>/progress/", views.project_progress, name="project_progress"),
]
