from __future__ import annotations

from dataclasses import asdict

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from operations.checks import readiness
from operations.metrics import register_live_state


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """The process is up and serving; nothing else is checked."""
    return JsonResponse({"status": "ok"})


@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    checks = readiness()
    ready = all(check.ok for check in checks)
    return JsonResponse(
        {"status": "ready" if ready else "not_ready", "checks": [asdict(c) for c in checks]},
        status=200 if ready else 503,
    )


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    register_live_state()
    return HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)
