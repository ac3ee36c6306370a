from django.contrib import admin
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/", include("executions.api.urls")),
    path("monitoring/", include("monitoring.urls")),
    # Browsers ask for it on every site; a 404 here is a console error on every admin page.
    path("favicon.ico", RedirectView.as_view(url=static("executions/favicon.svg"))),
]
