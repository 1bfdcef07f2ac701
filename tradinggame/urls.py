"""URL map: the public REST API at the root, its OpenAPI schema and docs, the operator admin under /admin/."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

import exchange.api.schema  # noqa: F401  (applies the OpenAPI annotations to the API views)

urlpatterns = [
    path("admin/", admin.site.urls),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("", include("exchange.api.urls")),
]

handler404 = "infra.errors.not_found"
handler500 = "infra.errors.server_error"
