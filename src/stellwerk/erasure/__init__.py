"""Erasure: deleting a person's data from every store that keeps events, with an audit trail."""
