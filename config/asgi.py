"""ASGI entry point: Django's HTTP views and the streaming WebSocket route."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

# Django must be set up before the consumers (and the models they use) are imported.
django_http = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from diarization.consumers import StreamConsumer  # noqa: E402
from operations.body_limits import RequestBodyLimit  # noqa: E402
from operations.database_roles import DatabaseRoleLifespan  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": RequestBodyLimit(django_http),
        "websocket": URLRouter([path("v1/modules/scaiecho/stream", StreamConsumer.as_asgi())]),
        # An ASGI server's startup: the API does not serve when its database role check fails.
        "lifespan": DatabaseRoleLifespan(),
    }
)
