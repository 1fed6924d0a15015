import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("generation", "0004_job_thumb_and_purpose"),
        ("loras", "0001_initial"),
        ("workspaces", "0001_initial"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="Recipe",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("name", models.CharField(max_length=100)),
                ("model_key", models.CharField(max_length=64)),
                (
                    "prompt_template",
                    models.TextField(help_text="{trigger} becomes the LoRAs' trigger words.", max_length=4000),
                ),
                ("negative_prompt", models.TextField(blank=True, max_length=4000)),
                (
                    "params",
                    models.JSONField(
                        blank=True, default=dict, help_text="Job params; those left out take the defaults."
                    ),
                ),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("updated_at", models.DateTimeField(auto_now=True)),
                (
                    "created_by",
                    models.ForeignKey(
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "workspace",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="recipes", to="workspaces.workspace"
                    ),
                ),
            ],
            options={
                "ordering": ["name", "id"],
                "constraints": [models.UniqueConstraint(fields=("workspace", "name"), name="recipe_name_unique")],
            },
        ),
        migrations.CreateModel(
            name="RecipeLoRA",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "lora_ref",
                    models.PositiveBigIntegerField(help_text="The LoRA's id, kept if the row is ever removed."),
                ),
                ("name", models.CharField(max_length=100)),
                ("position", models.PositiveSmallIntegerField()),
                ("weight", models.FloatField(help_text="With expert 'both' and a weight_low, the high-noise weight.")),
                (
                    "weight_low",
                    models.FloatField(blank=True, help_text="The low-noise weight (expert 'both' only).", null=True),
                ),
                ("expert", models.CharField(max_length=4)),
                (
                    "lora",
                    models.ForeignKey(
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="recipe_uses",
                        to="loras.lora",
                    ),
                ),
                (
                    "recipe",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="recipe_loras",
                        to="generation.recipe",
                    ),
                ),
            ],
            options={
                "ordering": ["recipe", "position"],
                "constraints": [
                    models.UniqueConstraint(fields=("recipe", "position"), name="recipe_lora_position_unique")
                ],
            },
        ),
    ]
