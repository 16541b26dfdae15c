from typing import Any

from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.forms import UserCreationForm

from editor.access import SHAREABLE_CHOICES, Role
from editor.models import Document, Membership

UNTITLED = "Untitled"


class SignupForm(UserCreationForm):
    class Meta(UserCreationForm.Meta):  # type: ignore[name-defined]  # the stubs omit Meta
        model = get_user_model()
        fields = ("username",)


class DocumentForm(forms.ModelForm):
    class Meta:
        model = Document
        fields = ("title",)
        widgets = {"title": forms.TextInput(attrs={"placeholder": "Title (optional)"})}
        error_messages = {"title": {"required": "Give the document a title."}}

    def clean_title(self) -> str:
        title = self.cleaned_data["title"].strip()
        if not title:
            raise forms.ValidationError("Give the document a title.")
        return title


class NewDocumentForm(DocumentForm):
    """A new document may start without a title: it is "Untitled" until renamed in the editor
    (a rename may not blank a title)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["title"].required = False

    def clean_title(self) -> str:
        return self.cleaned_data["title"].strip() or UNTITLED


class ShareForm(forms.Form):
    username = forms.CharField(max_length=150)
    role = forms.ChoiceField(choices=SHAREABLE_CHOICES, initial=Role.EDITOR)

    def __init__(self, *args: Any, document: Document, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.document = document

    def clean_username(self) -> AbstractBaseUser:
        username = self.cleaned_data["username"].strip()
        user = get_user_model().objects.filter(username__iexact=username).first()
        if user is None:
            raise forms.ValidationError(f"There is no user called “{username}”.")
        if user.pk == self.document.owner_id:
            raise forms.ValidationError(f"{user.username} owns this document already.")
        if Membership.objects.filter(document=self.document, user=user).exists():
            raise forms.ValidationError(
                f"{user.username} is already a member; change their role in the list below."
            )
        return user


class MemberRoleForm(forms.Form):
    role = forms.ChoiceField(choices=SHAREABLE_CHOICES)
