"""The base of every API view.

Apart from ``permissions.py`` because DRF imports that module (its default permission class)
while ``rest_framework.views`` is still loading.
"""

from __future__ import annotations

from rest_framework.views import APIView

from tenancy.permissions import HasRequiredScopes, ScopeAlternatives


class ScopedView(APIView):
    """Serves the methods it declares in ``required_scopes``; HEAD where it declares GET.

    OPTIONS is not served (405): DRF would answer it to any key with the view's name,
    description and parsers, and nothing here needs it (the console is same-origin, no CORS).
    """

    http_method_names = ["get", "head", "post", "put", "patch", "delete"]
    permission_classes = [HasRequiredScopes]
    required_scopes: dict[str, ScopeAlternatives] = {}
