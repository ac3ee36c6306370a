"""Credentials: secrets owned by a user, encrypted at rest, used by nodes by name, and kept out
of everything WeConnect stores, logs or answers (docs/security.md)."""
