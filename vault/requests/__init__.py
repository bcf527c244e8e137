"""Requests after the end: the request log, its ledger, receipts and the request report."""
