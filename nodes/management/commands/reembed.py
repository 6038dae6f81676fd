"""Compute a model's missing voiceprints from the references ahead of its roll-out."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from nodes.services.reembedding import ReembedProgress, reembed
from tenancy.models import Tenant
from voice.engines import EngineUnavailable, load_engine


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


class Command(BaseCommand):
    help = (
        "Compute, from the reference recordings, every voiceprint the given embedding model "
        "is missing in the voiceprint store, oldest speaker first, so that nodes started with "
        "that model load them instead of embedding the recordings. Safe to stop and run again."
    )

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        # Here --version names the model version; Django's own (the Django version) gives way.
        return super().create_parser(prog_name, subcommand, conflict_handler="resolve", **kwargs)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--model",
            required=True,
            help="the model as EMBEDDING_MODEL names it: resemblyzer, a Hugging Face model id "
            "or a local pyannote.audio checkpoint",
        )
        parser.add_argument(
            "--version",
            dest="model_version",
            help="the model version expected; refused when the model loads as another",
        )
        parser.add_argument(
            "--batch-size",
            type=_positive,
            default=100,
            help="speakers read per query, with a progress line after each [100]",
        )
        parser.add_argument(
            "--tenant",
            action="append",
            dest="tenants",
            metavar="SLUG",
            help="only this tenant's speakers (repeatable) [every tenant]",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        tenant_ids = None
        if options["tenants"]:
            slugs = set(options["tenants"])
            found = dict(Tenant.objects.filter(slug__in=slugs).values_list("slug", "id"))
            if unknown := sorted(slugs - set(found)):
                raise CommandError(f"no tenant {', '.join(unknown)}")
            tenant_ids = list(found.values())
        try:
            engine = load_engine(options["model"], settings.HF_TOKEN)
        except EngineUnavailable as exc:
            raise CommandError(f"unknown or unavailable model: {exc}") from exc
        wanted = options["model_version"]
        if wanted and wanted != engine.model_version:
            raise CommandError(
                f"{options['model']} loads as {engine.model_id} version "
                f"{engine.model_version}, not {wanted}: its voiceprints cannot be computed here"
            )
        self.stdout.write(f"model {engine.model_id} version {engine.model_version}")

        def report(progress: ReembedProgress) -> None:
            self.stdout.write(
                f"{progress.done}/{progress.total} speakers: {progress.computed} computed, "
                f"{len(progress.failed)} failed"
            )

        progress = reembed(
            engine, batch_size=options["batch_size"], tenant_ids=tenant_ids, report=report
        )
        if not progress.total:
            self.stdout.write("no voiceprint of this model is missing")
        for speaker_id, code in progress.failed.items():
            self.stderr.write(f"speaker {speaker_id}: {code}")
        if progress.failed:
            raise CommandError(
                f"{len(progress.failed)} voiceprints could not be computed (listed above); "
                "run the command again once their recordings are back"
            )
