from django.apps import AppConfig


class DiarizationConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "diarization"
    verbose_name = "Diarization"
