from django.db import migrations, models


class Migration(migrations.Migration):
    """The admin's labels: "LoRA uploads" (not "Lo ra uploads") and a help text without <…> (the admin shows help
    texts as HTML, so "workspaces/<id>/…" lost its placeholders)."""

    dependencies = [
        ("loras", "0007_lora_recommended_settings"),
    ]

    operations = [
        migrations.AlterModelOptions(name="loraupload", options={"verbose_name": "LoRA upload"}),
        migrations.AlterField(
            model_name="lora",
            name="file",
            field=models.FileField(
                blank=True, help_text="workspaces/{id}/loras/{uuid}/{sanitized name}", max_length=500
            ),
        ),
    ]
