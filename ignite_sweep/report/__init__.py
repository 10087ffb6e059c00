"""How a sweep is shown: tables.py (status, best), html.py (the HTML/PNG report), sync.py (offline runs to W&B)."""
