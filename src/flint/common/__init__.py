"""Pieces every service shares: database, ids, errors, credentials, auth, paging."""
