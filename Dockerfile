# The orchestrator's image: `docker compose` runs its worker, scheduler and sandbox from it.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# Only what the package is built from, so a change to tests or docs reuses this layer.
# README.md* rather than README.md: the build must not fail on a checkout without it.
COPY pyproject.toml README.md* ./
COPY orchestrator ./orchestrator
COPY workers ./workers
RUN pip install . && rm -rf /src

# Not root; the data folder (the embedded fallbacks, unused when REDIS_URL and DATABASE_URL
# are set) is the user's own.
RUN useradd --create-home --uid 10001 orchestrator \
    && mkdir /data \
    && chown orchestrator /data
USER orchestrator
WORKDIR /home/orchestrator
ENV ORCHESTRATOR_DATA_DIR=/data

ENTRYPOINT ["orchestrator"]
CMD ["--help"]
