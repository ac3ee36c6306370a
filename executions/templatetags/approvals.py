"""``{% approval_buttons execution %}``: the Approve/Reject form of each waiting
``wait_for_event`` run, for the execution's admin page."""

from __future__ import annotations

from django import template
from django.urls import reverse

from executions.admin_approvals import can_approve
from executions.events.models import EventWait
from executions.states import EXECUTION_ACTIVE

register = template.Library()


@register.inclusion_tag("admin/executions/execution/approval_buttons.html", takes_context=True)
def approval_buttons(context, execution):
    request = context.get("request")
    waits = []
    if (
        execution is not None
        and execution.status in EXECUTION_ACTIVE
        and request is not None
        and can_approve(request.user)
    ):
        waits = list(
            EventWait.objects.filter(execution=execution, outcome__isnull=True).order_by("id")
        )
    return {
        "waits": waits,
        "action": reverse("execution-approval", args=[execution.pk]) if waits else "",
        "csrf_token": context.get("csrf_token"),
    }
