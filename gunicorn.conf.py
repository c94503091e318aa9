"""gunicorn settings; each may be overridden from the environment."""
import multiprocessing
import os

bind = os.environ.get("CLARITY_BIND", "127.0.0.1:8000")
# Sync workers, about two per core, measured best on small machines. A sync worker reads each
# request itself, however slowly it arrives: four clients that connect and send nothing hold all
# four for the whole timeout. So they serve only behind a buffering proxy: make run puts nginx in
# front (deploy/nginx.conf, clarity/localnginx.py), and so should production (README, "In front
# of gunicorn"); CLARITY_BIND is then a unix socket or a private port.
workers = int(os.environ.get("WEB_CONCURRENCY", 2 * multiprocessing.cpu_count()))
worker_class = "sync"
timeout = int(os.environ.get("CLARITY_WORKER_TIMEOUT", "30"))
graceful_timeout = 20
preload_app = False
# Several servers may run on one machine (tests, benchmarks): no shared control socket.
control_socket_disable = True
# "-" is stdout; empty or /dev/null turns the access log off (nothing is formatted then).
accesslog = os.environ.get("CLARITY_ACCESS_LOG", "-")
accesslog = None if accesslog in ("", "/dev/null") else accesslog
# CLARITY_LOG_FORMAT=json (the default in production): gunicorn's own lines and the access log
# as JSON objects (clarity.logs), one per line, with the route template and the actor.
if (os.environ.get("CLARITY_LOG_FORMAT")
        or ("json" if os.environ.get("CLARITY_ENV") == "production" else "text")) == "json":
    logger_class = "clarity.logs.GunicornLogger"
# URLs never carry PHI; the access log keeps the request id, not the query's body.
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms rid=%({x-request-id}o)s'


def post_worker_init(worker):
    """Open this worker's pool after the fork, so no connection is shared between processes,
    and start sealing the audit trail in the background (one worker at a time seals: the
    others' try-lock fails and they skip that tick)."""
    from clarity import audit_chain

    clarity = worker.wsgi.extensions["clarity"]
    clarity.db.open()
    worker.audit_sealer = audit_chain.start_background_sealer(
        worker.wsgi, clarity.settings.audit_seal_interval_seconds)


def worker_exit(server, worker):
    """Stop the sealer before closing the pool it uses."""
    sealer = getattr(worker, "audit_sealer", None)
    if sealer is not None:
        sealer.stop()
    app = getattr(worker, "wsgi", None)
    if app is not None:
        app.extensions["clarity"].db.close()
