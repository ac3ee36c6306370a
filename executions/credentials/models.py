from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from executions.credentials import checks  # noqa: F401  (registers the key check)


class Credential(models.Model):
    """A named secret of one user. ``secret`` holds the kind's fields as a Fernet token
    (executions.credentials.crypto); nothing else about the row is secret."""

    class Kind(models.TextChoices):
        BEARER = "bearer"
        BASIC = "basic"
        HEADER = "header"
        GENERIC = "generic"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="credentials"
    )
    # Nodes refer to a credential by name ({"credential": "github"}, {{ credentials.github.token }}).
    name = models.CharField(max_length=64)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    secret = models.TextField(editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["owner", "name"], name="credential_owner_name_unique")
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.kind})"
