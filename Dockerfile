# hpsearch: one image for workers and the dashboard.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY search ./search
COPY objectives ./objectives
COPY studies ./studies
RUN pip install --no-cache-dir .
# Decoded datasets, shared by the workers of one machine (mount a volume here).
ENV HPSEARCH_CACHE=/cache
ENTRYPOINT ["hpsearch"]
CMD ["--help"]
