"""Serving models: turn arrivals and ready capacity into queueing and latency."""
