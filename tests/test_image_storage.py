"""Where images are kept (collab/settings.py, STORAGES["images"]): a folder under MEDIA_ROOT by
default, or an S3-compatible bucket with IMAGE_STORAGE=s3; nonsense stops the process. The S3
path is exercised for real against moto's S3 server (a real HTTP endpoint speaking the S3 API)
through django-storages: upload, serve, delete."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from PIL import Image

from editor.models import DocumentImage
from tests import live
from tests.api.test_images import served_bytes

ROOT = Path(__file__).resolve().parent.parent
PROBE = (
    "import json, django; from django.conf import settings; django.setup();"
    "print(json.dumps(settings.STORAGES['images'], default=str))"
)
VARIABLES = [
    "MEDIA_ROOT",
    "IMAGE_STORAGE",
    "AWS_STORAGE_BUCKET_NAME",
    "AWS_S3_ENDPOINT_URL",
    "AWS_S3_REGION_NAME",
    "IMAGE_S3_PREFIX",
]


def load(tmp_path, **env) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in VARIABLES}
    clean.update(DJANGO_SETTINGS_MODULE="collab.settings", COLLAB_VAR_DIR=str(tmp_path), **env)
    return subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=clean, capture_output=True, text=True
    )


def test_it_keeps_images_in_a_folder_under_the_var_dir_by_default(tmp_path):
    default = load(tmp_path)
    elsewhere = load(tmp_path, MEDIA_ROOT=str(tmp_path / "uploads"))

    assert json.loads(default.stdout) == {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(tmp_path / "media" / "images")},
    }
    assert json.loads(elsewhere.stdout)["OPTIONS"] == {"location": str(tmp_path / "uploads/images")}


def test_it_keeps_images_in_a_bucket_with_image_storage_s3(tmp_path):
    result = load(
        tmp_path,
        IMAGE_STORAGE="s3",
        AWS_STORAGE_BUCKET_NAME="collab-images",
        AWS_S3_ENDPOINT_URL="https://s3.example.internal",
        AWS_S3_REGION_NAME="eu-west-1",
    )

    assert json.loads(result.stdout) == {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": "collab-images",
            "endpoint_url": "https://s3.example.internal",
            "region_name": "eu-west-1",
            "location": "images",
            "default_acl": None,
            "file_overwrite": False,
        },
    }


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"IMAGE_STORAGE": "s3"}, "IMAGE_STORAGE=s3 needs AWS_STORAGE_BUCKET_NAME."),
        ({"IMAGE_STORAGE": "ftp"}, "IMAGE_STORAGE must be one of local/s3, not 'ftp'"),
        ({"MAX_IMAGE_BYTES": "10MB"}, "MAX_IMAGE_BYTES must be an integer, not '10MB'"),
    ],
)
def test_it_refuses_to_start_on_nonsense(tmp_path, env, message):
    result = load(tmp_path, **env)

    assert result.returncode != 0
    assert f"ImproperlyConfigured: {message}" in result.stderr


# -- a real S3 endpoint ------------------------------------------------------------------------

BUCKET = "collab-images"


@pytest.fixture
def bucket(monkeypatch):
    """moto's S3 server on a free port, an empty bucket, and the images field writing to it
    through django-storages, configured as collab/settings.py configures it."""
    import boto3
    from moto.server import ThreadedMotoServer
    from storages.backends.s3 import S3Storage

    port = live.free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    credentials = {"aws_access_key_id": "collab", "aws_secret_access_key": "collab-secret"}
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **credentials)
    client.create_bucket(Bucket=BUCKET)
    storage = S3Storage(
        bucket_name=BUCKET,
        endpoint_url=endpoint,
        region_name="us-east-1",
        location="images",
        default_acl=None,
        file_overwrite=False,
        access_key=credentials["aws_access_key_id"],
        secret_key=credentials["aws_secret_access_key"],
    )
    monkeypatch.setattr(DocumentImage._meta.get_field("file"), "storage", storage)
    yield client
    server.stop()


def keys(client) -> list[str]:
    return [item["Key"] for item in client.list_objects_v2(Bucket=BUCKET).get("Contents", [])]


def test_an_image_goes_to_the_bucket_and_comes_back_only_through_collab(
    bucket, client, owner, viewer, stranger, document, django_capture_on_commit_callbacks
):
    buffer = io.BytesIO()
    Image.new("RGB", (6, 5), (1, 2, 3)).save(buffer, "WEBP")
    data = buffer.getvalue()
    client.force_login(owner)

    body = client.post(
        reverse("api-images", args=[document.id]),
        {"image": SimpleUploadedFile("photo.png", data, content_type="image/png")},
    ).json()

    image = DocumentImage.objects.get()
    assert keys(bucket) == [f"images/{document.pk}/{image.pk}.webp"]
    assert bucket.get_object(Bucket=BUCKET, Key=keys(bucket)[0])["Body"].read() == data
    client.force_login(viewer)
    served = client.get(body["url"])
    assert served.status_code == 200
    assert served_bytes(served) == data
    assert served["Content-Type"] == "image/webp"
    assert served["Content-Length"] == str(len(data))
    client.force_login(stranger)
    assert client.get(body["url"]).status_code == 404

    with django_capture_on_commit_callbacks(execute=True):
        document.delete()

    assert keys(bucket) == []
