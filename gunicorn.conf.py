"""gunicorn settings; each may be overridden from the environment."""
import multiprocessing
import os
import shutil

from clarity import logs  # gunicorn puts the working directory on sys.path before reading this file

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
        or logs.default_format(os.environ.get("CLARITY_ENV", "development"))) == "json":
    logger_class = "clarity.logs.GunicornLogger"
# URLs never carry PHI; the access log keeps the request id, not the query's body.
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms rid=%({x-request-id}o)s'


def on_starting(server):
    """Give this server's workers an empty directory of their own for their metric files, before
    anything imports prometheus_client (clarity.metrics): PROMETHEUS_MULTIPROC_DIR if set, else
    a temporary directory, removed at exit."""
    from clarity import metrics

    server.metrics_dir, server.metrics_dir_owned = metrics.prepare_directory()


def when_ready(server):
    """Serve the workers' metrics from the master on CLARITY_METRICS_BIND, never on the API's
    address. A taken port is logged and the API served without them."""
    from clarity import config, metrics

    bind = os.environ.get("CLARITY_METRICS_BIND") or metrics.DEFAULT_BIND
    address = metrics.parse_bind(bind)
    if address is None:
        server.log.info("Metrics are off (CLARITY_METRICS_BIND=off)")
        return
    try:
        server.metrics_server = metrics.serve(address, config.from_env())
    except OSError as exc:
        server.log.error("Metrics cannot listen on %s (%s): serving without them", bind, exc.strerror)
        return
    server.log.info("Metrics at http://%s/metrics (files in %s)", bind, server.metrics_dir)


def post_fork(server, worker):
    """A worker closes its copy of the master's metrics socket, which would hold the port if
    the master died first."""
    metrics_server = getattr(server, "metrics_server", None)
    if metrics_server is not None:
        metrics_server.socket.close()


def child_exit(server, worker):
    """A dead worker's pool is gone: drop its live gauges."""
    from clarity import metrics

    metrics.worker_exited(worker.pid)


def on_exit(server):
    """Remove the metrics directory this server made (an operator's stays, emptied at the next start)."""
    if getattr(server, "metrics_dir_owned", False):
        shutil.rmtree(server.metrics_dir, ignore_errors=True)


def post_worker_init(worker):
    """Open this worker's pool after the fork, so no connection is shared between processes,
    start sealing the audit trail in the background (one worker at a time seals: the
    others' try-lock fails and they skip that tick), and sampling the pool for its metrics. A
    long streamed answer reports the worker alive as it goes (clarity.heartbeat)."""
    from clarity import audit_chain, heartbeat, metrics

    heartbeat.install(worker.notify)

    clarity = worker.wsgi.extensions["clarity"]
    clarity.db.open()
    worker.audit_sealer = audit_chain.start_background_sealer(
        worker.wsgi, clarity.settings.audit_seal_interval_seconds)
    worker.pool_sampler = metrics.PoolSampler(clarity.db).start()


def worker_exit(server, worker):
    """Stop the sealer and the pool sampler before closing the pool they use."""
    for thread in (getattr(worker, "audit_sealer", None), getattr(worker, "pool_sampler", None)):
        if thread is not None:
            thread.stop()
    app = getattr(worker, "wsgi", None)
    if app is not None:
        app.extensions["clarity"].db.close()
