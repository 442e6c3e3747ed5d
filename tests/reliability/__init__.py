"""Shared scenario code for the reliability suite (tests/test_reliability_*.py) and
benchmarks/reliability_report.py."""
