"""The settings mypy's Django plugin loads: the real ones, read as a local run reads them.

Type checking deploys nothing, so it needs no DJANGO_SECRET_KEY of its own.
"""

import os

os.environ.setdefault("SCAIECHO_ENV", "local")

from config.settings import *  # noqa: E402,F403
