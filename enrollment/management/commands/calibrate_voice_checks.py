"""Measure the consent voice check on a directory of speakers' recordings (one folder each)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from enrollment.calibration import CalibrationError, CheckRates, calibrate
from voice.engines import get_engine
from voice.vad import get_vad


def _share(count: int, total: int) -> str:
    return f"{count}/{total} ({100 * count / total:.1f}%)" if total else "0/0"


def _rates(title: str, rates: CheckRates) -> list[str]:
    return [
        f"{title}: refuse below {rates.reject_below:.3f}, review below {rates.review_below:.3f}",
        f"  false accepts (impostor passes without review): "
        f"{_share(rates.false_accepts, rates.impostor)}",
        f"  false rejects (genuine held or refused):        "
        f"{_share(rates.false_rejects, rates.genuine)}",
        f"  genuine held for review: {_share(rates.genuine_reviewed, rates.genuine)}, "
        f"refused: {_share(rates.genuine_refused, rates.genuine)}",
        f"  impostor held for review: {_share(rates.impostor_reviewed, rates.impostor)}",
    ]


class Command(BaseCommand):
    help = (
        "Score every pair of recordings in DIR (one folder per speaker) as the consent check "
        "does; print its error rates at the configured thresholds and the thresholds that "
        "reach a target false-accept rate."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("directory", type=Path)
        parser.add_argument(
            "--target-far",
            type=float,
            default=0.0,
            help="share of impostor pairs allowed to pass without review [0]",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        engine = get_engine()
        try:
            report = calibrate(options["directory"], engine, get_vad(), options["target_far"])
        except CalibrationError as error:
            raise CommandError(str(error)) from error
        scores = report.scores
        lines = [
            f"model {report.model_id}; {len(report.speakers)} speakers, "
            f"{sum(report.speakers.values())} recordings; "
            f"{scores.genuine.size} genuine and {scores.impostor.size} impostor pairs",
            f"genuine scores {scores.genuine.min():.3f}..{scores.genuine.max():.3f}, "
            f"impostor scores {scores.impostor.min():.3f}..{scores.impostor.max():.3f}",
            *_rates("configured", report.current),
            *_rates(f"for a false-accept rate of at most {report.target_far:g}", report.suggested),
            "set them with PREFLIGHT_CONSENT_MATCH_THRESHOLD="
            f"{report.suggested.reject_below:.3f} "
            f"PREFLIGHT_CONSENT_MATCH_WARN={report.suggested.review_below:.3f}",
        ]
        self.stdout.write("\n".join(lines))
