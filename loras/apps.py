from django.apps import AppConfig


class LorasConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "loras"
    verbose_name = "LoRA library"
