"""Keys: the cryptographic primitives, the key hierarchy (slots, VMK, client keys), sessions, SSH signatures."""
