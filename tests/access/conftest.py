from tests.vault.conftest import customers  # noqa: F401  (the same customer dataset fixture)
