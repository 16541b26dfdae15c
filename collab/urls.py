from django.contrib import admin
from django.urls import include, path

from editor import metrics_view, offline_views, views

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("metrics", metrics_view.metrics, name="metrics"),
    path("sw.js", offline_views.service_worker, name="service-worker"),
    path("accounts/signup/", views.signup, name="signup"),
    # Before Django's own: open sockets of the sessions a new password ends close with them.
    path(
        "accounts/password_change/",
        views.PasswordChangeView.as_view(),
        name="password_change",
    ),
    path("accounts/", include("django.contrib.auth.urls")),
    path("admin/", admin.site.urls),
    path("api/", include("editor.api.urls")),
    path("", include("editor.urls")),
]
