from django.urls import include, path
from rest_framework.routers import DefaultRouter

from executions.api.bulk import BulkOperationCreateView, BulkOperationDetailView
from executions.api.credentials import CredentialViewSet
from executions.api.events import (
    EventView,
    EventWebhookTokenView,
    EventWebhookView,
    ResumeLinkView,
)
from executions.api.rate_limits import RateLimitViewSet
from executions.api.triggers import WebhookExecutionView, WebhookView
from executions.api.views import ExecutionViewSet, NodeTypeListView, WorkflowViewSet

router = DefaultRouter()
router.register("workflows", WorkflowViewSet, basename="workflow")
router.register("executions", ExecutionViewSet, basename="execution")
router.register("credentials", CredentialViewSet, basename="credential")
router.register("rate-limits", RateLimitViewSet, basename="rate-limit")

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
    path(
        "hooks/<str:workflow_id>/executions/<str:execution_id>/",
        WebhookExecutionView.as_view(),
        name="webhook-execution",
    ),
    path("events/", EventView.as_view(), name="events"),
    path("events/webhook-token/", EventWebhookTokenView.as_view(), name="event-webhook-token"),
    path("events/hooks/<str:webhook_id>/", EventWebhookView.as_view(), name="event-webhook"),
    path(
        "resume/<str:execution_id>/<str:node>/<str:token>/",
        ResumeLinkView.as_view(),
        name="resume-link",
    ),
    path("", include(router.urls)),
]
