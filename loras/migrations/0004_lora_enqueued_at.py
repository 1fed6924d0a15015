from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("loras", "0003_status_without_pending"),
    ]

    operations = [
        migrations.AddField(
            model_name="lora",
            name="enqueued_at",
            field=models.DateTimeField(
                blank=True, help_text="When the broker accepted the lora_ingest message; empty until it has.", null=True
            ),
        ),
    ]
