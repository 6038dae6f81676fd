from django.apps import AppConfig


class EnrollmentConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "enrollment"

    def ready(self) -> None:
        # Registers the Bearer scheme with the OpenAPI generator.
        from enrollment.api import schema  # noqa: F401
