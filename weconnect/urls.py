from django.contrib import admin
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from executions.admin_approvals import approval_view

urlpatterns = [
    # Before the admin's own URLs (its catch-all would take it): Approve/Reject on a waiting run.
    path(
        "admin/executions/execution/<uuid:execution_id>/approval/",
        admin.site.admin_view(approval_view),
        name="execution-approval",
    ),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/", include("executions.api.urls")),
    path("monitoring/", include("monitoring.urls")),
    # Browsers ask for it on every site; a 404 here is a console error on every admin page.
    path("favicon.ico", RedirectView.as_view(url=static("executions/favicon.svg"))),
]
