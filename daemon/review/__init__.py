"""``polishd serve``: the review page (daemon/review/app.py), a process of its own beside ``polishd run``."""
