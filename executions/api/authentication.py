"""Token authentication that says what is wrong with a malformed Authorization header.

DRF's TokenAuthentication ignores a header that does not start with ``Token``, so a client
that sends the bare key (or ``Bearer <key>``) gets "Authentication credentials were not
provided." although it sent some. This one answers 401 with the reason instead.
"""

from __future__ import annotations

from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication, get_authorization_header


class PrefixCheckingTokenAuthentication(TokenAuthentication):
    def authenticate(self, request):
        header = get_authorization_header(request).split()
        if header and header[0].lower() != self.keyword.lower().encode():
            scheme = header[0].decode(errors="replace")
            if len(header) == 1:
                raise exceptions.AuthenticationFailed(
                    "Invalid Authorization header: the 'Token ' prefix is missing "
                    "(send 'Authorization: Token <key>')."
                )
            if scheme.lower() in ("bearer", "basic", "jwt"):
                raise exceptions.AuthenticationFailed(
                    f"Invalid Authorization header: '{scheme[:20]}' is not accepted here "
                    "(send 'Authorization: Token <key>')."
                )
        return super().authenticate(request)
