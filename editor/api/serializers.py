"""Shapes of the REST API's payloads (docs/api.md). Validation only; the work is elsewhere."""

from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from rest_framework import serializers

from editor.access import SHAREABLE_CHOICES, Role
from editor.models import Document, Membership, Version


class UserSerializer(serializers.ModelSerializer):
    class Meta:
        model = get_user_model()
        fields = ["id", "username"]


class DocumentSerializer(serializers.ModelSerializer):
    owner = UserSerializer(read_only=True)
    # The requesting user's role, annotated by the view.
    role = serializers.ChoiceField(choices=Role.choices, read_only=True)

    class Meta:
        model = Document
        fields = ["id", "title", "owner", "role", "created_at", "updated_at"]


class MembershipSerializer(serializers.ModelSerializer):
    user = UserSerializer(read_only=True)
    role = serializers.ChoiceField(choices=Role.choices, read_only=True)

    class Meta:
        model = Membership
        fields = ["id", "user", "role"]


class MemberRoleSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=SHAREABLE_CHOICES)


class NewMemberSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    role = serializers.ChoiceField(choices=SHAREABLE_CHOICES)

    def validate_username(self, username: str) -> AbstractBaseUser:
        document = self.context["document"]
        user = get_user_model().objects.filter(username__iexact=username).first()
        if user is None:
            raise serializers.ValidationError(f"There is no user called “{username}”.")
        if user.pk == document.owner_id:
            raise serializers.ValidationError(f"{user.username} owns this document already.")
        if Membership.objects.filter(document=document, user=user).exists():
            raise serializers.ValidationError(
                f"{user.username} is already a member; change their role instead."
            )
        return user


class TextSerializer(serializers.Serializer):
    # Whitespace is content here: never trimmed, and an empty text is a text.
    text = serializers.CharField(trim_whitespace=False, allow_blank=True)


class EditSerializer(serializers.Serializer):
    """Replace ``delete`` characters at ``index`` with ``insert``; positions in Unicode code
    points, as Python and most languages count characters (not UTF-16 units, not bytes)."""

    index = serializers.IntegerField(min_value=0)
    delete = serializers.IntegerField(min_value=0, default=0)
    insert = serializers.CharField(trim_whitespace=False, allow_blank=True, default="")


class NewVersionSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)


class VersionSerializer(serializers.ModelSerializer):
    author = UserSerializer(read_only=True, allow_null=True)

    class Meta:
        model = Version
        fields = ["id", "name", "automatic", "author", "created_at"]


class VersionDetailSerializer(VersionSerializer):
    class Meta(VersionSerializer.Meta):
        fields = [*VersionSerializer.Meta.fields, "text"]
