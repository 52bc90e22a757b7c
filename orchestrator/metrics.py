"""This process's own Prometheus counters: the provider's 429s, rate-limit waits, latency.

Money is not counted here: its gauges are read from the database at each scrape
(``lifecycle/gauges.py``), so every process shows the same truth. What is here only this
process saw. Several worker processes on a host add theirs up through prometheus_client's
multiprocess mode, which ``PROMETHEUS_MULTIPROC_DIR`` must choose before this module is first
imported (``workers/metrics_server.py`` sets it in the workers' environment).
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

# Label values are ours, never the provider's: the endpoint's path and the call's priority.
PROVIDER_429 = Counter(
    "orchestrator_provider_429",
    "Answers 429 (rate limited) from the provider, per endpoint.",
    ["endpoint"],
)
PROVIDER_SECONDS = Histogram(
    "orchestrator_provider_request_seconds",
    "Time from sending a request to the provider to its answer read, per endpoint.",
    ["endpoint"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0),
)
RATELIMIT_WAIT = Counter(
    "orchestrator_ratelimit_wait_seconds",
    "Seconds threads slept for their slot of the shared rate limit, per priority.",
    ["priority"],
)
RATELIMIT_DEFERRED = Counter(
    "orchestrator_ratelimit_deferred",
    "Calls put off (sent again later by a delayed message) because the shared rate limit had "
    "no slot within their priority's horizon.",
    ["priority"],
)


def endpoint(path: str) -> str:
    """The endpoint label of a request path: ``/order`` -> ``order``."""
    return path.strip("/") or "/"
