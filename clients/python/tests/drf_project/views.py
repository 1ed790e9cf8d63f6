"""A DRF API protected by keyward, as a user of the client would write it."""

from typing import Any

from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from keyward.drf import HasScopes, KeywardAuthentication


def _who(request: Request) -> dict[str, Any]:
    return {
        "user_id": request.user.id,
        "user_name": request.user.name,
        "user_external_id": request.user.external_id,
        "is_authenticated": request.user.is_authenticated,
        "token_id": request.auth.token_id,
        "scopes": list(request.auth.scopes),
    }


class DropletList(APIView):
    authentication_classes = [KeywardAuthentication]
    permission_classes = [HasScopes("droplet:read")]

    def get(self, request: Request) -> Response:
        return Response(_who(request))


class Storage(APIView):
    """Either scope will do: permissions combine like DRF's own."""

    authentication_classes = [KeywardAuthentication]
    permission_classes = [HasScopes("droplet:read") | HasScopes("volume:read")]

    def get(self, request: Request) -> Response:
        return Response(_who(request))
