from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("executions", "0012_admin"),
    ]

    operations = [
        migrations.AddField(
            model_name="execution",
            name="trace_context",
            field=models.JSONField(blank=True, editable=False, null=True),
        ),
    ]
