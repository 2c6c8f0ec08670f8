"""Analyses of trained models for the reports: complexity (parameters, MACs, latency, size)."""
