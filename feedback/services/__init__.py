"""Writes of the feedback domain. Each function is keyword-only, typed and atomic."""
