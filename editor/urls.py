from django.urls import path

from editor import image_views, link_views, views

urlpatterns = [
    path("documents/", views.document_list, name="document-list"),
    path("documents/new/", views.document_create, name="document-create"),
    path("documents/<uuid:document_id>/", views.document_detail, name="document-detail"),
    path("documents/<uuid:document_id>/rename/", views.document_rename, name="document-rename"),
    path("documents/<uuid:document_id>/delete/", views.document_delete, name="document-delete"),
    path("documents/<uuid:document_id>/share/", views.document_share, name="document-share"),
    path("documents/<uuid:document_id>/export/", views.document_export, name="document-export"),
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
    path("documents/<uuid:document_id>/links/", link_views.link_create, name="link-create"),
    path(
        "documents/<uuid:document_id>/links/<int:link_id>/revoke/",
        link_views.link_revoke,
        name="link-revoke",
    ),
    path(
        "documents/<uuid:document_id>/request-access/",
        link_views.request_access,
        name="request-access",
    ),
    path(
        "documents/<uuid:document_id>/requests/<int:request_id>/",
        link_views.access_request_answer,
        name="access-request-answer",
    ),
    path("s/<str:token>/", link_views.share_link, name="share-link"),
]
