"""Triggers that start executions from outside the API: webhooks and cron schedules."""
