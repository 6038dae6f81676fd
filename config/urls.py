from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularJSONAPIView, SpectacularSwaggerView

from console import sign_in

urlpatterns = [
    # The admin's sign-in, under the console's sign-in limits.
    path("admin/login/", sign_in.admin_sign_in, name="admin-sign-in"),
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
