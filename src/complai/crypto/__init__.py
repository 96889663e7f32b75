"""Cryptography on top of pyca/cryptography: key files, signing, pseudonyms (and, later, sealing)."""
