from typing import Any

from django.apps import AppConfig
from django.core.signals import setting_changed

from data_keys.wrapping import get_key_wrapper


def _forget_wrapper(setting: str, **kwargs: Any) -> None:
    # Tests change the KEK settings; the wrapper made from the old ones must not outlive them.
    if setting.startswith("DATA_KEY_") or setting == "LOCAL_RUN":
        get_key_wrapper.cache_clear()


class DataKeysConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "data_keys"
    verbose_name = "Per-speaker data keys"

    def ready(self) -> None:
        setting_changed.connect(_forget_wrapper)
