from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularJSONAPIView, SpectacularSwaggerView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("v1/openapi.json", SpectacularJSONAPIView.as_view(), name="openapi-schema"),
    path("v1/docs/", SpectacularSwaggerView.as_view(url_name="openapi-schema"), name="api-docs"),
    path("v1/modules/scaiecho/", include("enrollment.api.urls")),
    path("v1/modules/scaiecho/", include("nodes.api.urls")),
    path("v1/modules/scaiecho/", include("audit.api.urls")),
    path("v1/modules/scaiecho/", include("diarization.api.urls")),
    path("console/", include("console.urls")),
    path("", include("operations.urls")),
]
