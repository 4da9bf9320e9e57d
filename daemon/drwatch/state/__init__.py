"""State derived from stored results: the snapshot, 3-2-1-1-0 compliance, consistency, costs and views."""
