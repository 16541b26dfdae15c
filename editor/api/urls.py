from django.urls import path
from drf_spectacular.views import SpectacularSwaggerSplitView
from rest_framework.routers import SimpleRouter

from editor.api import views
from editor.api.images import ImageUploadView
from editor.api.presence import PresenceView
from editor.api.schema import SchemaView

# Path converters rather than regexes: an id that is not a UUID (or an integer) is a 404 from
# the URL resolver instead of a query that fails.
router = SimpleRouter(use_regex_path=False)
router.register("documents", views.DocumentViewSet, basename="api-document")
router.register(
    "documents/<uuid:document_id>/members", views.MembershipViewSet, basename="api-member"
)
router.register(
    "documents/<uuid:document_id>/versions", views.VersionViewSet, basename="api-version"
)

urlpatterns = [
    path("documents/<uuid:document_id>/ticket/", views.TicketView.as_view(), name="api-ticket"),
    path("documents/<uuid:document_id>/presence/", PresenceView.as_view(), name="api-presence"),
    path("documents/<uuid:document_id>/content/", views.ContentView.as_view(), name="api-content"),
    path("documents/<uuid:document_id>/export/", views.ExportView.as_view(), name="api-export"),
    path("documents/<uuid:document_id>/images/", ImageUploadView.as_view(), name="api-images"),
    path("auth/token/", views.TokenView.as_view(), name="api-token"),
    path("schema/", SchemaView.as_view(), name="api-schema"),
    # The split view serves Swagger UI's set-up script as a file of its own (?script), where
    # the plain view inlines it, which the Content-Security-Policy forbids.
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    *router.urls,
]
