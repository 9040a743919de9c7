"""Tests of drdm.cli modules that have a file of their own here (tests/cli/test_<module>.py)."""
