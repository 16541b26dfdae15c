"""Sign up, log in, log out and change password, as a person would."""

from django.contrib.auth import get_user_model
from django.urls import reverse

from tests.conftest import PASSWORD

User = get_user_model()
NEW = "a fresh long secret"


def test_it_signs_up_and_logs_the_new_user_in(client, db):
    response = client.post(
        reverse("signup"),
        {"username": "newbie", "password1": PASSWORD, "password2": PASSWORD},
        follow=True,
    )

    assert response.redirect_chain[-1][0] == reverse("document-list")
    assert response.context["user"].username == "newbie"
    assert "Welcome, newbie" in response.content.decode()


def test_it_refuses_mismatched_passwords_and_creates_nobody(client, db):
    response = client.post(
        reverse("signup"), {"username": "newbie", "password1": PASSWORD, "password2": "other"}
    )

    assert response.status_code == 400
    assert "The two password fields didn’t match." in response.content.decode()
    assert not User.objects.filter(username="newbie").exists()


def test_it_refuses_a_weak_password_with_the_reason(client, db):
    response = client.post(
        reverse("signup"), {"username": "newbie", "password1": "123", "password2": "123"}
    )

    assert response.status_code == 400
    assert "too short" in response.content.decode()
    assert not User.objects.exists()


def test_it_refuses_a_taken_username(client, owner):
    response = client.post(
        reverse("signup"), {"username": "olive", "password1": PASSWORD, "password2": PASSWORD}
    )

    assert response.status_code == 400
    assert "already exists" in response.content.decode()
    assert User.objects.filter(username="olive").count() == 1


def test_it_logs_in_and_returns_to_the_requested_page(client, document):
    response = client.post(
        reverse("login"),
        {"username": "olive", "password": PASSWORD, "next": document.get_absolute_url()},
    )
    assert response["Location"] == document.get_absolute_url()


def test_it_says_when_the_password_is_wrong(client, owner):
    response = client.post(reverse("login"), {"username": "olive", "password": "nope"})

    assert response.status_code == 200
    assert "Please enter a correct username and password" in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_it_logs_out_on_post(client, owner):
    client.force_login(owner)
    response = client.post(reverse("logout"))

    assert response["Location"] == reverse("login")
    assert "_auth_user_id" not in client.session


def test_it_changes_the_password(client, owner):
    client.force_login(owner)
    response = client.post(
        reverse("password_change"),
        {
            "old_password": PASSWORD,
            "new_password1": "a fresh long secret",
            "new_password2": "a fresh long secret",
        },
        follow=True,
    )

    assert "Password changed" in response.content.decode()
    owner.refresh_from_db()
    assert owner.check_password("a fresh long secret")


def test_it_keeps_the_password_when_the_old_one_is_wrong(client, owner):
    client.force_login(owner)
    response = client.post(
        reverse("password_change"),
        {
            "old_password": "wrong",
            "new_password1": "a fresh long secret",
            "new_password2": "a fresh long secret",
        },
    )

    assert "Your old password was entered incorrectly" in response.content.decode()
    owner.refresh_from_db()
    assert owner.check_password(PASSWORD)


def test_it_renders_the_account_pages(client, owner):
    assert client.get(reverse("login")).status_code == 200
    assert client.get(reverse("signup")).status_code == 200
    client.force_login(owner)
    assert client.get(reverse("password_change")).status_code == 200
    assert client.get(reverse("signup"))["Location"] == reverse("document-list")
