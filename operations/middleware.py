"""Request ids, latency metrics and one access log line per request."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from common.metrics import REQUEST_LATENCY
from operations.structured_logs import current_request_id

logger = logging.getLogger("scaiecho.access")

REQUEST_ID_HEADER = "X-Request-ID"
# A caller's request id is kept only when it is short and plain (it ends up in logs).
_ACCEPTABLE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


class RequestContextMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        offered = request.headers.get(REQUEST_ID_HEADER, "")
        request_id = offered if _ACCEPTABLE_ID.match(offered) else uuid.uuid4().hex
        token = current_request_id.set(request_id)
        started = time.perf_counter()
        try:
            response = self.get_response(request)
        finally:
            current_request_id.reset(token)
        elapsed = time.perf_counter() - started
        match = getattr(request, "resolver_match", None)
        # The route pattern, not the path: ids in paths would explode the label set.
        route = match.route if match is not None else "unmatched"
        REQUEST_LATENCY.labels(route, request.method, str(response.status_code)).observe(elapsed)
        response[REQUEST_ID_HEADER] = request_id
        logger.info(
            "%s %s %s %.1f ms",
            request.method,
            route,
            response.status_code,
            elapsed * 1000,
            extra={
                "request_id": request_id,
                "method": request.method,
                "route": route,
                "status": response.status_code,
                "duration_ms": round(elapsed * 1000, 1),
            },
        )
        return response
