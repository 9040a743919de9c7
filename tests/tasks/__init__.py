"""Tests of drdm.tasks, one file per module (tests/tasks/test_<module>.py)."""
