"""Secure aggregation: pairwise masks from X25519 + AES-CTR, Shamir-shared seeds, sparse neighbourhoods."""
