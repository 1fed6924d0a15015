from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("loras", "0010_merge_0008_lora_preview_0009_lora_admin_labels"),
    ]

    operations = [
        migrations.AddField(
            model_name="lorapair",
            name="recommended_settings",
            field=models.JSONField(
                blank=True,
                default=dict,
                help_text="Any of steps, guidance, guidance_2, shift; optionally the model they suit.",
            ),
        ),
    ]
