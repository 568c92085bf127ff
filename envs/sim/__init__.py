"""Batched cluster simulator: parameters, state and one pure step function."""
