"""Creates the periodic tasks of the stale sweep (every six hours) and retention (daily) in
django-celery-beat's tables, so they show, and can be edited, in the admin. Idempotent: running
it again (or after an edit in the admin) leaves an existing schedule as the operator set it."""

from django.db import migrations

SWEEPS = [
    ("weconnect-stale-sweep", "weconnect.stale_sweep", {"minute": "0", "hour": "*/6"}),
    ("weconnect-retention", "weconnect.retention", {"minute": "30", "hour": "3"}),
]


def create(apps, schema_editor):
    CrontabSchedule = apps.get_model("django_celery_beat", "CrontabSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    for name, task, cron in SWEEPS:
        if PeriodicTask.objects.filter(name=name).exists():
            continue
        schedule, _ = CrontabSchedule.objects.get_or_create(
            minute=cron["minute"],
            hour=cron["hour"],
            day_of_week="*",
            day_of_month="*",
            month_of_year="*",
            timezone="UTC",
        )
        PeriodicTask.objects.create(name=name, task=task, crontab=schedule, enabled=True)


def remove(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(name__in=[n for n, _, _ in SWEEPS]).delete()


class Migration(migrations.Migration):
    dependencies = [("django_celery_beat", "0019_alter_periodictasks_options")]
    operations = [migrations.RunPython(create, remove)]
