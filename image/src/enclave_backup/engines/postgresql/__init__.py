"""PostgreSQL: pg_dump's plain script (dump.py), its COPY counting, the database-level state pg_dump leaves out."""
