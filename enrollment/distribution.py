"""Where an enrolled speaker's voiceprint goes: the nodes that hold it.

``enrollment`` sits below ``nodes`` (nodes read speakers and call the lifecycle), so it never
imports them. It states what it needs from them here, and the nodes app installs the
implementation when Django starts (``nodes.apps``).
"""

from __future__ import annotations

from typing import Protocol

from enrollment.models import Speaker


class SpeakerDistribution(Protocol):
    def fan_out(self, speaker: Speaker) -> list[str]:
        """Schedules the speaker on every candidate node once the transaction commits;
        returns the nodes scheduled (none when no node is online)."""
        ...

    def wait_until_warm(self, speaker: Speaker, node_ids: list[str], timeout_s: float) -> list[str]:
        """Waits until every scheduled node answered or the time is up; returns the warm ones."""
        ...

    def evict_everywhere(self, speaker: Speaker) -> list[str]:
        """Marks every node that may hold the speaker for eviction and, once the transaction
        commits, tells each; returns those nodes."""
        ...


_installed: SpeakerDistribution | None = None


def install(distribution: SpeakerDistribution) -> None:
    global _installed
    _installed = distribution


def distribution() -> SpeakerDistribution:
    if _installed is None:
        raise RuntimeError("no speaker distribution installed: is the nodes app installed?")
    return _installed
