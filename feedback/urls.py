from django.urls import path

from feedback import views

urlpatterns = [
    path("", views.home, name="home"),
]
