"""Judging maps and planning labels: where to label next (suggest)."""
