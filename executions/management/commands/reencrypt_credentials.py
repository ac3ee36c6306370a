"""Re-encrypt every credential under the first key of WECONNECT_ENCRYPTION_KEYS.

Key rotation: put the new key first (keep the old ones after it), deploy, run this command,
then remove the old keys. Rows already under the first key are left alone, so it can be run
again safely (after an interruption, say)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from executions.credentials import crypto
from executions.credentials.services import credential_reencrypt_all


class Command(BaseCommand):
    help = "Re-encrypt every stored credential with the first key of WECONNECT_ENCRYPTION_KEYS."

    def add_arguments(self, parser):
        parser.add_argument("--batch-size", type=int, default=200)

    def handle(self, *args, batch_size: int, **options):
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1")
        try:
            rewritten, current = credential_reencrypt_all(batch_size=batch_size)
        except crypto.DecryptionFailed as exc:
            raise CommandError(f"{exc}; add the key it was written with back to the list") from None
        self.stdout.write(
            f"re-encrypted {rewritten} credential(s); {current} already used the first key"
        )
