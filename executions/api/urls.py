from django.urls import include, path
from rest_framework.routers import DefaultRouter

from executions.api.bulk import BulkOperationCreateView, BulkOperationDetailView
from executions.api.credentials import CredentialViewSet
from executions.api.triggers import WebhookView
from executions.api.views import ExecutionViewSet, NodeTypeListView, WorkflowViewSet

router = DefaultRouter()
router.register("workflows", WorkflowViewSet, basename="workflow")
router.register("executions", ExecutionViewSet, basename="execution")
router.register("credentials", CredentialViewSet, basename="credential")

urlpatterns = [
    path("node-types/", NodeTypeListView.as_view(), name="node-types"),
    # Before the router: "bulk" is not an execution id.
    path("executions/bulk/", BulkOperationCreateView.as_view(), name="execution-bulk"),
    path(
        "executions/bulk/<uuid:bulk_id>/",
        BulkOperationDetailView.as_view(),
        name="execution-bulk-detail",
    ),
    path("hooks/<str:workflow_id>/", WebhookView.as_view(), name="webhook"),
    path("", include(router.urls)),
]
