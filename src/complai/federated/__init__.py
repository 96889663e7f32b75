"""Federated learning: organisations train one model without pooling their data (Flower)."""
