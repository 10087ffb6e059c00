"""Where the local backend records sweeps and runs: sqlite.py (one SQLite file) today; one interface for every store."""
