"""`maild rules apply`: the rules' effects on letters already stored, recorded as at ingest, then done.

``letters`` says which stored letters can be decided and keeps only the named rules' say,
``run`` reads the letters a page at a time, records each decision in the page's transaction and
drains the outbox as ``maild run --once`` does, and ``report`` renders the totals.
"""
