"""Integrity: the audit chain, the state commitment, its checks, the out-of-file head and `verify`."""
