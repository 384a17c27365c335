# One image for every Kyoso service of the regional stack (docker-compose.yml): the
# compose file picks the subcommand (`kyoso ingest`, `kyoso gateway`, ...).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY kyoso ./kyoso
RUN pip install . && rm -rf /src

# Services run unprivileged; new named volumes mounted on these directories take their
# owner, so outboxes, dead letters and API keys are writable without root.
RUN useradd --system --uid 1000 --user-group --home-dir /var/lib/kyoso kyoso \
    && mkdir -p /var/lib/kyoso /data \
    && chown kyoso:kyoso /var/lib/kyoso /data
USER kyoso
WORKDIR /var/lib/kyoso

ENTRYPOINT ["kyoso"]
CMD ["--help"]
