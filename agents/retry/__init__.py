"""Retries of failed provider calls: when to retry (policy) and how many per key (budget)."""
