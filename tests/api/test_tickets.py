import pytest
from django.urls import reverse

from editor.realtime import tickets


def ticket_url(document):
    return reverse("api-ticket", args=[document.id])


@pytest.mark.parametrize("who", ["owner", "editor", "viewer"])
def test_it_issues_a_ticket_to_every_member(login_as, document, people, who):
    response = login_as(who).post(ticket_url(document))

    assert response.status_code == 201
    body = response.json()
    assert body["expires_in"] == 300
    ticket = tickets.read(body["ticket"])
    assert ticket == tickets.Ticket(user_id=people[who].pk, document_id=str(document.id))


def test_it_hides_the_document_from_a_stranger(login_as, document):
    assert login_as("stranger").post(ticket_url(document)).status_code == 404


def test_it_requires_a_login(client, document):
    response = client.post(ticket_url(document))
    assert response.status_code == 403
    assert "credentials were not provided" in response.json()["detail"]


def test_it_requires_csrf_for_session_clients(document, owner):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    response = client.post(ticket_url(document))
    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]


def test_it_rejects_get(login_as, document):
    assert login_as("owner").get(ticket_url(document)).status_code == 405


def test_it_reads_back_only_genuine_unexpired_tickets(document, owner, settings):
    token, _ = tickets.issue(owner.pk, document.pk)
    assert tickets.read(token).user_id == owner.pk
    with pytest.raises(tickets.TicketError, match="signature"):
        tickets.read(token + "x")
    with pytest.raises(tickets.TicketError, match="signature"):
        tickets.read("not a ticket")
    settings.COLLAB = {**settings.COLLAB, "TICKET_TTL": -1}
    with pytest.raises(tickets.TicketError, match="expired"):
        tickets.read(token)
