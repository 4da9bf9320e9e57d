"""Validator family ``postgres``: restore drills, replica lag and RDS snapshots."""
