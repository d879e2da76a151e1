from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    # REST API, one module per owner: annotation domain, exports, generation, training.
    path("api/v1/", include("feedback.api_urls")),
    path("api/v1/", include("feedback.exports.urls")),
    path("api/v1/", include("inference.urls")),
    path("api/v1/", include("training.urls")),
    # Pages.
    path("exports/", include("feedback.exports.page_urls")),
    path("generation/", include("inference.page_urls")),
    path("training/", include("training.page_urls")),
    path("", include("feedback.urls")),
]
