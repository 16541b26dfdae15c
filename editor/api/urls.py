from django.urls import path

from editor.api import views

urlpatterns = [
    path("documents/<uuid:document_id>/ticket/", views.TicketView.as_view(), name="api-ticket"),
]
