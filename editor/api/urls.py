from django.urls import path

from editor.api import views
from editor.api.presence import PresenceView

urlpatterns = [
    path("documents/<uuid:document_id>/ticket/", views.TicketView.as_view(), name="api-ticket"),
    path("documents/<uuid:document_id>/presence/", PresenceView.as_view(), name="api-presence"),
]
