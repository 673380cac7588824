"""What each response and page shows: plain dicts built from services' results, one owner per view.

The JSON API (gateway.api) and the HTML pages (gateway.web) both call these, so a person's page and
the machine client's JSON show the same numbers and the same text.
"""
