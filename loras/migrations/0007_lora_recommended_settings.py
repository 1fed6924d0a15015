from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("loras", "0006_lora_hashes"),
    ]

    operations = [
        migrations.AddField(
            model_name="lora",
            name="recommended_settings",
            field=models.JSONField(
                blank=True,
                default=dict,
                help_text="Any of steps, guidance, guidance_2, shift; optionally the model they suit.",
            ),
        ),
        migrations.AddField(
            model_name="lora",
            name="is_distill",
            field=models.BooleanField(
                default=False, help_text="A step-distilled LoRA (lightx2v, Lightning, CausVid…)."
            ),
        ),
    ]
