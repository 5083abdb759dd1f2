# spine-cds: CDS Hooks back-pain triage service.
# durable-rules ships only an sdist, so it is compiled in the builder stage; the runtime image
# carries no compiler.

FROM python:3.11-slim-bookworm AS builder
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md LICENSE constraints.txt ./
COPY cds_service ./cds_service
COPY rules ./rules
RUN pip wheel --no-cache-dir --wheel-dir /wheels -c constraints.txt .

FROM python:3.11-slim-bookworm
RUN useradd --system --uid 10001 --home-dir /app cds
WORKDIR /app
RUN mkdir /app/data && chown cds /app/data
COPY --from=builder /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels spine-cds && rm -rf /wheels
COPY fhir_examples ./fhir_examples
ENV CDS_EXAMPLES_DIR=/app/fhir_examples \
    CDS_DATABASE_URL=sqlite:////app/data/spine-cds.db \
    PYTHONUNBUFFERED=1
USER cds
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2)"]
ENTRYPOINT ["cds-service", "serve", "--host", "0.0.0.0", "--port", "8000"]
