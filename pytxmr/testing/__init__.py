"""Helpers for testing pytxmr and jobs written for it: ``run_job`` runs a
job on a list of records in this process (see docs/jobs.md); the rest
(``processes``, ``fakes``, the test servers) serves pytxmr's own tests.
"""

from .jobs import run_job

__all__ = ["run_job"]
