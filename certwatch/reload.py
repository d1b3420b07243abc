"""Hot reload of the policy on SIGHUP, without dropping events.

The new policy is validated first; a file with errors is refused (every problem logged) and
the policy in force stays. A valid one replaces the processor between two events: the
suppression memory and the counters carry over (no repeated alerts, no reset metrics), the
detectors are built afresh from the new policy, so learned state (spike baselines, known
certificates, learned client networks) starts again.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from certwatch.services import ProcessorService
from processors.engine import DetectorFactory, Processor
from processors.policy_file import PolicyError, load_policy

log = logging.getLogger("certwatch.processor")


class PolicyReloader:
    """Reloads ``path`` into ``service`` on demand (the CLI calls it on SIGHUP)."""

    def __init__(self, path: Path, service: ProcessorService,
                 registry: Mapping[str, DetectorFactory]) -> None:
        self.path = path
        self.service = service
        self.registry = registry
        self.reloads = 0
        self.refused = 0

    def reload(self) -> bool:
        """True when the new policy is in force; False when it was refused."""
        try:
            policy = load_policy(self.path)
        except PolicyError as error:
            self.refused += 1
            for problem in error.problems:
                log.error("policy not reloaded, the one in force stays: %s", problem)
            return False
        old = self.service.processor
        new = Processor(policy, self.registry)
        new.suppressor = old.suppressor
        new.stats = old.stats
        self.service.processor = new
        self.reloads += 1
        log.info("policy %s reloaded: profile %s, %d detectors", self.path,
                 policy.profile or "none", len(new.detectors))
        return True
