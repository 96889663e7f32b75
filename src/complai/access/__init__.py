"""Identity (principals, roles, tokens, passwords), policy (pycasbin), data-sharing agreements."""
