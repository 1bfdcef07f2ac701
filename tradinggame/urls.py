"""URL map: the public REST API at the root, the operator admin under /admin/."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("accounts.urls")),
    path("", include("exchange.api.urls")),
]

handler404 = "tradinggame.errors.not_found"
handler500 = "tradinggame.errors.server_error"
