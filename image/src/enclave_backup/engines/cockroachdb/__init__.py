"""CockroachDB: the logical dump (dump.py, insertbatch.py) and the swap around views and routines (swap.py)."""
