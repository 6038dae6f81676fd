from django.db import models

from enrollment.models import Speaker


class Node(models.Model):
    """A pyannote node as last seen; Redis holds the live heartbeat, this row outlives it."""

    node_id = models.CharField(max_length=64, primary_key=True)
    engine = models.CharField(max_length=32)
    model_id = models.CharField(max_length=200)
    model_version = models.CharField(max_length=100)
    boot_id = models.CharField(max_length=32)
    host = models.CharField(max_length=200)
    pid = models.IntegerField()
    first_seen_at = models.DateTimeField(auto_now_add=True)
    booted_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()

    class Meta:
        ordering = ["node_id"]

    def __str__(self) -> str:
        return self.node_id


class AssignmentState(models.TextChoices):
    QUEUED = "queued"
    WARM = "warm"
    FAILED = "failed"
    EVICTING = "evicting"
    EVICTED = "evicted"


class NodeAssignment(models.Model):
    """One speaker on one node: the durable truth behind the warm registry in Redis."""

    speaker = models.ForeignKey(Speaker, on_delete=models.PROTECT, related_name="node_assignments")
    node_id = models.CharField(max_length=64)
    state = models.CharField(
        max_length=16, choices=AssignmentState.choices, default=AssignmentState.QUEUED
    )
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    # Seconds the node spent on its last successful warm (fetch, decode, embed).
    last_work_s = models.FloatField(null=True, blank=True)
    # Which boot of the node holds the embedding: a restarted node has lost it.
    boot_id = models.CharField(max_length=32, blank=True)
    embedding_model_id = models.CharField(max_length=200, blank=True)
    embedding_model_version = models.CharField(max_length=100, blank=True)
    queued_at = models.DateTimeField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["speaker", "node_id"], name="one_assignment_per_node")
        ]
        indexes = [models.Index(fields=["node_id", "state"])]

    def __str__(self) -> str:
        return f"{self.speaker_id}@{self.node_id}: {self.state}"
