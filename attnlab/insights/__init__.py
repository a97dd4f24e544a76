"""Insight analyses over trained models and results: journeys, segments, fairness, cold start, memory, history length."""
