from django.urls import path

from editor import image_views, views

urlpatterns = [
    path("documents/", views.document_list, name="document-list"),
    path("documents/new/", views.document_create, name="document-create"),
    path("documents/<uuid:document_id>/", views.document_detail, name="document-detail"),
    path("documents/<uuid:document_id>/rename/", views.document_rename, name="document-rename"),
    path("documents/<uuid:document_id>/delete/", views.document_delete, name="document-delete"),
    path("documents/<uuid:document_id>/share/", views.document_share, name="document-share"),
    path(
        "documents/<uuid:document_id>/members/<int:membership_id>/",
        views.member_update,
        name="member-update",
    ),
    path(
        "documents/<uuid:document_id>/images/<uuid:image_id>",
        image_views.document_image,
        name="document-image",
    ),
]
