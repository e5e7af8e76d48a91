"""Predictive refresh of cached entries (issue 24): per-key features, the static rule, an
online model, and their offline replay."""
