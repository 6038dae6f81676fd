from celery.signals import worker_init
from django.apps import AppConfig

from operations.database_roles import check_worker_role


class OperationsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "operations"
    verbose_name = "Operations (health, metrics, logs)"

    def ready(self) -> None:
        worker_init.connect(check_worker_role)
