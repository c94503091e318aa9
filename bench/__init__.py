"""``make bench``: Clarity's patient endpoints against a minimal Flask app and bare psycopg.

Everything runs on 127.0.0.1, against a throwaway database in a local cluster under
``.var/bench``; see ``bench.run`` for what is measured and printed.
"""
