"""Whole-system fault soak: writers, relays and consumers under injected faults, then a checker.

Run ``python -m tests.soak --profile smoke|full --seed N`` (see docs/reliability.md).
"""
