from django.apps import AppConfig


class TenancyConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "tenancy"

    def ready(self) -> None:
        # Registers the Bearer scheme with the OpenAPI generator.
        from tenancy import schema  # noqa: F401
