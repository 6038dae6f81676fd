"""Run the whole service in the foreground: API (ASGI), Celery worker and pyannote node(s)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

from config import embedded
from enrollment.models import ALL_SCOPES, Tenant
from enrollment.services import create_api_key, create_tenant

DEMO_TENANT = "demo"


class Command(BaseCommand):
    help = "Run the API on an ASGI server, a Celery worker and pyannote node(s), until Ctrl-C."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=os.environ.get("API_HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("API_PORT", "8000")))
        parser.add_argument(
            "--api-workers", type=int, default=int(os.environ.get("API_WORKERS", "1"))
        )
        parser.add_argument(
            "--nodes",
            default=os.environ.get("SCAIECHO_NODES", "node-1"),
            help="comma-separated ids of the pyannote nodes to run here ('' for none)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        call_command("migrate", interactive=False, verbosity=0)
        self._create_demo_tenant()

        # Children inherit DATABASE_URL / REDIS_URL, so they share the servers started here.
        python = sys.executable
        commands = {
            "api": [
                python,
                "-m",
                "uvicorn",
                "config.asgi:application",
                "--host",
                options["host"],
                "--port",
                str(options["port"]),
                "--workers",
                str(options["api_workers"]),
                "--no-access-log",
            ],
            # The orchestrator worker also runs beat: reconciliation, blob-erasure retries,
            # the retention sweep.
            "worker": [
                python,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "--beat",
                "--queues",
                "orchestrator",
                "--concurrency",
                "2",
                "--loglevel",
                "INFO",
                "--schedule",
                str(embedded.data_dir() / "celerybeat-schedule"),
            ],
        }
        for node_id in [n.strip() for n in options["nodes"].split(",") if n.strip()]:
            commands[node_id] = [python, "manage.py", "run_node", node_id]
        children = {
            name: subprocess.Popen(command, env=os.environ.copy())
            for name, command in commands.items()
        }
        self.stdout.write(
            f"API on http://{options['host']}:{options['port']}/v1/docs/ "
            f"(database {settings.DATABASES['default']['HOST']}); Ctrl-C stops."
        )
        stopping = False

        def stop(signum: int, frame: Any) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        exit_code = 0
        while not stopping:
            for name, child in children.items():
                if child.poll() is not None:
                    self.stderr.write(f"{name} exited with {child.returncode}; stopping.")
                    exit_code, stopping = 1, True
            time.sleep(0.5)
        for child in children.values():
            if child.poll() is None:
                child.terminate()
        for child in children.values():
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                child.kill()
        if exit_code:
            raise SystemExit(exit_code)

    def _create_demo_tenant(self) -> None:
        if Tenant.objects.filter(slug=DEMO_TENANT).exists():
            return
        tenant = create_tenant(DEMO_TENANT, "Demo tenant")
        _, raw_key = create_api_key(tenant, list(ALL_SCOPES), name="demo (every scope)")
        self.stdout.write(
            self.style.SUCCESS(
                f"Created tenant '{DEMO_TENANT}'. Its API key, with every scope, shown only now:\n"
                f"  {raw_key}\n"
                f"  export SCAIECHO_API_KEY={raw_key}"
            )
        )
