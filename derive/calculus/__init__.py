"""Symbolic stages: derivative rules, stability rewrites, kinks and derivations."""
