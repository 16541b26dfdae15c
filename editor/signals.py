"""Open sockets follow membership changes: a removed member is disconnected at once, a new role
applies at once, a deactivated user is disconnected from every document at once, a session's
sockets close when it logs out or a new password ends it; and a rename shows at once on every
open page (docs/protocol.md). Announced after the transaction commits, to every process."""

import asyncio
import uuid
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from asgiref.sync import async_to_sync
from django.conf import settings
from django.contrib.auth import HASH_SESSION_KEY
from django.contrib.auth.signals import user_logged_out
from django.db import transaction
from django.db.models.signals import post_delete, post_save, pre_save
from django.dispatch import receiver
from django.utils.crypto import constant_time_compare

from editor.models import Document, DocumentImage, Membership, ShareLink


def _announce(document_id: uuid.UUID, user_id: int | None) -> None:
    transaction.on_commit(lambda: _publish(document_id, user_id))


def _publish(document_id: uuid.UUID, user_id: int | None) -> None:
    from editor.realtime.room import publish_access_change

    _run(publish_access_change, document_id, user_id)


# How many documents a user-wide announcement (a deactivation, a logout, a new password) is
# sent to at once: a user may be a member of thousands.
AT_ONCE = 64


async def to_each(
    publish: Callable[..., Coroutine[Any, Any, bool]], document_ids: list[uuid.UUID], *args: Any
) -> int:
    """Sends ``publish(document_id, *args)`` for every document, ``AT_ONCE`` at a time, and
    stops after a batch in which one failed (each failure is logged): with Redis out of reach,
    each of the rest would wait and fail alike. Returns how many were sent."""
    sent = 0
    for start in range(0, len(document_ids), AT_ONCE):
        batch = document_ids[start : start + AT_ONCE]
        went = await asyncio.gather(*(publish(document_id, *args) for document_id in batch))
        sent += sum(went)
        if not all(went):
            break
    return sent


async def _publish_sessions_ended(document_ids: list[uuid.UUID], *args: Any) -> None:
    from editor.realtime.room import publish_sessions_ended

    await to_each(publish_sessions_ended, document_ids, *args)


async def _publish_each(document_ids: list[uuid.UUID], user_id: int) -> None:
    from editor.realtime.room import publish_access_change

    await to_each(publish_access_change, document_ids, user_id)


def _documents_of(user_id: int) -> list[uuid.UUID]:
    """Where a user's sockets may be: the documents they are a member of (owners are too)."""
    return list(Membership.objects.filter(user_id=user_id).values_list("document_id", flat=True))


def _run(publish: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # the usual case: sync code (views, admin, scripts) in a thread
        async_to_sync(publish)(*args)
    else:  # sync ORM code inside an event loop (only with DJANGO_ALLOW_ASYNC_UNSAFE)
        loop.create_task(publish(*args))


@receiver(post_save, sender=Membership)
@receiver(post_delete, sender=Membership)
def membership_changed(sender: type[Membership], instance: Membership, **kwargs: Any) -> None:
    _announce(instance.document_id, instance.user_id)


@dataclass
class _OwnChange:
    user_id: int
    changed: bool = False


# Set while a user changes their own password through the site (``own_password_change``).
_own_change: ContextVar[_OwnChange | None] = ContextVar("collab_own_password_change", default=None)


@contextmanager
def own_password_change(request: Any) -> Iterator[None]:
    """Wraps a request of the site's password change page. When it writes a new password hash
    (the change itself, or Django re-hashing the old password as it checks it), the user's
    sessions end as Django's rule has it: every session whose login no longer matches the
    password, so every other one, and this one unless a successful change carried it over
    (Django's ``update_session_auth_hash``, under a new key). Their sockets close with them;
    this session's stay open when it was carried over."""
    before = request.session.session_key
    change = _OwnChange(request.user.pk)
    token = _own_change.set(change)
    try:
        yield
    finally:
        _own_change.reset(token)
    if change.changed:
        session, user = request.session, request.user
        carried = constant_time_compare(
            session.get(HASH_SESSION_KEY) or "", user.get_session_auth_hash()
        )
        kept, renamed = (before, session.session_key) if carried else (None, None)
        documents = _documents_of(change.user_id)
        _run(_publish_sessions_ended, documents, change.user_id, None, kept, renamed)


@receiver(pre_save, sender=settings.AUTH_USER_MODEL)
def user_saving(sender: type[Any], instance: Any, **kwargs: Any) -> None:
    """Notes whether this save changes the stored password (read once, before the save)."""
    update_fields = kwargs.get("update_fields")
    instance._collab_password_changed = False
    if instance._state.adding or (update_fields is not None and "password" not in update_fields):
        return
    stored = sender._default_manager.filter(pk=instance.pk).values_list("password", flat=True)
    instance._collab_password_changed = stored.first() not in (None, instance.password)


@receiver(post_save, sender=settings.AUTH_USER_MODEL)
def user_saved(sender: type[Any], instance: Any, created: bool, **kwargs: Any) -> None:
    """A user deactivated (the admin's "active" box, or any save with ``is_active`` false) loses
    their open sockets at once, as a removed member does: every document they are a member of
    (an owner is one too) re-checks their sockets, and the check, which only ever finds active
    users, closes them with 4403. Their pages and API calls are refused already (Django's
    authentication backend lets no inactive user in). A deleted user needs nothing here: each
    of their memberships' deletion announces its document.

    A new password hash ends the user's sessions (Django's rule: each login holds a hash of it),
    whether a new password or Django upgrading the hash as it checks one, so the sockets they
    opened close with 4401; the site's own password page keeps the session that made the change
    (``own_password_change``). Ticket sockets are no session's: a ticket stays valid for
    ``WS_TICKET_TTL``.

    ``QuerySet.update`` sends no signal: sockets of users changed that way keep their access
    until they reconnect."""
    if created:
        return
    user_id = instance.pk
    if getattr(instance, "_collab_password_changed", False):
        instance._collab_password_changed = False
        own = _own_change.get()
        if own is not None and own.user_id == user_id:
            own.changed = True  # announced by own_password_change, once the session has its key
        else:
            transaction.on_commit(
                lambda: _run(_publish_sessions_ended, _documents_of(user_id), user_id, None)
            )
    update_fields = kwargs.get("update_fields")
    if instance.is_active or (update_fields and "is_active" not in update_fields):
        return
    transaction.on_commit(lambda: _run(_publish_each, _documents_of(user_id), user_id))


@receiver(user_logged_out)
def logged_out(sender: type[Any], request: Any, user: Any, **kwargs: Any) -> None:
    """Logging out (the site's or the admin's "Log out") closes the sockets that browser
    session opened, in every document of the user (4401, "logged out"), so a tab left open on
    a shared computer stops showing and saving the documents. Sent before Django empties the
    session, so it names the session itself rather than asking the sockets to read it again."""
    key = getattr(getattr(request, "session", None), "session_key", None)
    if user is None or not key:
        return
    _run(_publish_sessions_ended, _documents_of(user.pk), user.pk, key)


@receiver(post_save, sender=Document)
def document_saved(
    sender: type[Document], instance: Document, created: bool, **kwargs: Any
) -> None:
    """A rename (the page's title form, the API, the admin): every open page shows the title.
    Documents are saved for nothing else (their text is written by the store, with update())."""
    if created:
        return
    from editor.realtime.room import publish_title

    document_id, title = instance.pk, instance.title
    transaction.on_commit(lambda: _run(publish_title, document_id, title))


@receiver(post_delete, sender=ShareLink)
def link_revoked(sender: type[ShareLink], instance: ShareLink, **kwargs: Any) -> None:
    # Members who joined through it are removed (and announced) one by one; guests reading
    # through it have no membership: every socket of the document checks its access again.
    _announce(instance.document_id, None)


@receiver(post_delete, sender=Document)
def document_deleted(sender: type[Document], instance: Document, **kwargs: Any) -> None:
    _announce(instance.pk, None)


@receiver(post_delete, sender=DocumentImage)
def image_deleted(sender: type[DocumentImage], instance: DocumentImage, **kwargs: Any) -> None:
    """Its file goes too, once the deletion is committed (Django leaves files behind)."""
    file = instance.file
    if file.name:
        transaction.on_commit(lambda: file.storage.delete(file.name))
