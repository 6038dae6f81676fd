"""Results written before names were resolved at read time kept each enrolled speaker's
``display_name``; it is removed from every stored result (segments and speakers), so that no
name outlives its speaker's erasure. Job rows are ordinary rows: they are updated in place."""

from typing import Any

from django.db import migrations
from django.db.models import TextField
from django.db.models.functions import Cast

PERSONAL_KEYS = ("display_name",)


def without_names(result: dict[str, Any]) -> dict[str, Any]:
    return {
        **result,
        **{
            part: [
                {k: v for k, v in item.items() if k not in PERSONAL_KEYS}
                if isinstance(item, dict)
                else item
                for item in result[part]
            ]
            for part in ("segments", "speakers")
            if isinstance(result.get(part), list)
        },
    }


def strip_names(apps: Any, schema_editor: Any) -> None:
    job_model = apps.get_model("diarization", "DiarizationJob")
    named = job_model.objects.annotate(text=Cast("result", TextField())).filter(
        text__contains='"display_name"'
    )
    for job_id, result in named.values_list("id", "result").iterator(chunk_size=500):
        if isinstance(result, dict):
            job_model.objects.filter(id=job_id).update(result=without_names(result))


class Migration(migrations.Migration):
    dependencies = [("diarization", "0003_result_expiry")]

    # Nothing to restore on the way back: the names are gone on purpose.
    operations = [migrations.RunPython(strip_names, migrations.RunPython.noop)]
