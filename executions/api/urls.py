from django.urls import include, path
from rest_framework.routers import DefaultRouter

from executions.api.credentials import CredentialViewSet
from executions.api.rate_limits import RateLimitViewSet
from executions.api.triggers import WebhookView
from executions.api.views import ExecutionViewSet, NodeTypeListView, WorkflowViewSet

router = DefaultRouter()
router.register("workflows", WorkflowViewSet, basename="workflow")
router.register("executions", ExecutionViewSet, basename="execution")
router.register("credentials", CredentialViewSet, basename="credential")
router.register("rate-limits", RateLimitViewSet, basename="rate-limit")

urlpatterns = [
    path("node-types/", NodeTypeListView.as_view(), name="node-types"),
    path("hooks/<str:workflow_id>/", WebhookView.as_view(), name="webhook"),
    path("", include(router.urls)),
]
