"""Baseline autoscalers that the reinforcement-learning agent is compared against."""
