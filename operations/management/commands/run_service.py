"""Run the whole service in the foreground: API (ASGI), Celery worker and pyannote node(s)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit.signing import ensure_signing_key
from common.database_roles import UnsafeDatabaseRole, check_database_role
from data_keys.services import check_key_encryption_key
from operations.services import create_api_key
from tenancy.models import ALL_SCOPES, Tenant
from tenancy.services import create_tenant

DEMO_TENANT = "demo"
STOP_TIMEOUT_S = 20.0


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
        # As the owner when DATABASE_OWNER_URL names one (manage.py does on the embedded server),
        # which then grants the service's role; the children check that role again as they start.
        call_command("migrate", interactive=False, verbosity=0)
        try:
            check_database_role("run_service")
        except UnsafeDatabaseRole as refusal:
            raise CommandError(str(refusal)) from refusal
        self._create_demo_tenant()
        ensure_signing_key()  # signs the audit checkpoints; generated here on a local run
        try:
            check_key_encryption_key()  # wraps the data keys; generated here on a local run
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from exc

        # Children inherit DATABASE_URL / REDIS_URL, so they share the embedded servers that
        # manage.py started (config/embedded.py, which this layer does not import).
        data_dir = Path(os.environ.get("SCAIECHO_DATA_DIR", ".data"))
        data_dir.mkdir(parents=True, exist_ok=True)
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
                # The client address is read from the trusted proxy header the settings name
                # (common/client_address.py), never from uvicorn's own guess.
                "--no-proxy-headers",
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
                str(data_dir / "celerybeat-schedule"),
            ],
        }
        for node_id in [n.strip() for n in options["nodes"].split(",") if n.strip()]:
            commands[node_id] = [python, "manage.py", "run_node", node_id]
        stopping = False

        def stop(signum: int, frame: Any) -> None:
            nonlocal stopping
            stopping = True

        # Set before any child starts, so that no signal leaves one running.
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        children: dict[str, subprocess.Popen[bytes]] = {}
        # The owner's credentials stay here: the API, worker and nodes never hold them.
        environment = {k: v for k, v in os.environ.items() if k != "DATABASE_OWNER_URL"}
        exit_code = 0
        try:
            for name, command in commands.items():
                # Each in its own process group: a terminal's Ctrl-C reaches this process only,
                # which stops the children in order, and a group takes their own children along.
                children[name] = subprocess.Popen(command, env=environment, process_group=0)
            self.stdout.write(
                f"API on http://{options['host']}:{options['port']}/v1/docs/ "
                f"(database {settings.DATABASES['default']['HOST']} as role "
                f"{settings.DATABASES['default']['USER']}); Ctrl-C stops."
            )
            while not stopping:
                for name, child in children.items():
                    if child.poll() is not None:
                        self.stderr.write(f"{name} exited with {child.returncode}; stopping.")
                        exit_code, stopping = 1, True
                time.sleep(0.5)
        finally:
            self._stop(children)
        if exit_code:
            raise SystemExit(exit_code)

    def _stop(self, children: dict[str, subprocess.Popen[bytes]]) -> None:
        for child in children.values():
            _signal_group(child, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for name, child in children.items():
            try:
                child.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.stderr.write(f"{name} still runs after {STOP_TIMEOUT_S} s; killing it.")
        for child in children.values():
            # Also whatever the child left behind in its group.
            _signal_group(child, signal.SIGKILL)
            child.wait()

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


def _signal_group(child: subprocess.Popen[bytes], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # the group is gone
        os.killpg(child.pid, signum)
