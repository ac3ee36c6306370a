"""Approve and Reject buttons on a waiting ``wait_for_event`` run in the execution admin.

A separate piece from the execution admin itself: a view (wired in weconnect/urls.py under
the admin's prefix, behind admin_view) and a template fragment the change form includes
(templatetags/approvals.py). A button resumes the run with
``{"approved": true|false, "comment": ..., "user": ...}``, exactly like the API would."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import reverse

from executions.events.models import EventWait
from executions.events.resume import execution_resume
from executions.events.waits import NotWaiting, PayloadInvalid
from executions.models import Execution

MAX_COMMENT = 2000


def approval_payload(*, approved: bool, comment: str, user) -> dict:
    return {"approved": approved, "comment": comment, "user": user.get_username()}


def can_approve(user) -> bool:
    return user.is_active and user.is_staff and user.has_perm("executions.change_execution")


def approval_view(request, execution_id):
    """POST node, decision (approve|reject) and comment: resume that node of the execution."""
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    if not can_approve(request.user):
        raise PermissionDenied
    execution = get_object_or_404(Execution, pk=execution_id)
    back = reverse("admin:executions_execution_change", args=[execution.pk])
    decision = request.POST.get("decision")
    node = request.POST.get("node") or None
    comment = (request.POST.get("comment") or "").strip()
    if decision not in ("approve", "reject"):
        messages.error(request, "decision: must be approve or reject")
        return HttpResponseRedirect(back)
    if len(comment) > MAX_COMMENT:
        messages.error(request, f"comment: at most {MAX_COMMENT} characters")
        return HttpResponseRedirect(back)
    payload = approval_payload(approved=decision == "approve", comment=comment, user=request.user)
    try:
        wait = execution_resume(
            execution=execution, node=node, data=payload, source=EventWait.Source.ADMIN
        )
    except PayloadInvalid as exc:
        messages.error(request, "The node's schema refuses the answer: " + "; ".join(exc.errors))
    except NotWaiting as exc:
        messages.error(request, str(exc))
    else:
        verb = "Approved" if payload["approved"] else "Rejected"
        messages.success(request, f"{verb}: node {wait.node!r} resumed.")
    return HttpResponseRedirect(back)
