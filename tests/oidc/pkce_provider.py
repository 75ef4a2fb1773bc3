"""oidc-provider-mock, with PKCE enforced as Cognito, Okta, Entra ID and Keycloak enforce it
for a public client: a code asked for with a `code_challenge` is exchanged only with the
verifier whose S256 hash it is, and a public client's exchange without a verifier is refused. The mock does
not keep a code's challenge, so this keeps it beside the code, and hands Authlib's own PKCE
extension (RFC 7636) to the authorization code grant.

The console's browser tests start it with the mock's own options; a test's provider lives
as long as the test.
"""

import sys
import warnings

import authlib.deprecate
from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc7636 import CodeChallenge
from oidc_provider_mock import _app
from oidc_provider_mock.__main__ import run

# Each code's (challenge, method), as its authorization request asked.
challenges = {}


class CodeGrant(_app.AuthorizationCodeGrant):
    """The mock's grant, keeping each code's challenge, and taking public clients (no secret,
    as keyward's console is) as real providers do."""

    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]

    def save_authorization_code(self, code, request):
        super().save_authorization_code(code, request)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", authlib.deprecate.AuthlibDeprecationWarning)
            challenges[code] = (request.data.get("code_challenge"), request.data.get("code_challenge_method"))


class Pkce(CodeChallenge):
    """Authlib's PKCE check, reading the challenge kept for the code."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]

    def get_authorization_code_challenge(self, authorization_code):
        return challenges.get(authorization_code.code, (None, None))[0]

    def get_authorization_code_challenge_method(self, authorization_code):
        return challenges.get(authorization_code.code, (None, None))[1]


register = AuthorizationServer.register_grant


def register_with_pkce(server, grant, extensions=None):
    """The mock's registration of its grants, with PKCE added to the code grant's."""
    if grant is _app.AuthorizationCodeGrant:
        return register(server, CodeGrant, [*(extensions or []), Pkce(required=True)])
    return register(server, grant, extensions)


AuthorizationServer.register_grant = register_with_pkce

if __name__ == "__main__":
    sys.exit(run())
