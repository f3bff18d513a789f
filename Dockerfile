# hpsearch: one image for workers and the dashboard.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md constraints.txt ./
COPY search ./search
COPY objectives ./objectives
COPY studies ./studies
# The versions the test suite was run with.
RUN pip install --no-cache-dir -c constraints.txt .
# Decoded datasets, shared by the workers of one machine (mount a volume here).
ENV HPSEARCH_CACHE=/cache
ENTRYPOINT ["hpsearch"]
CMD ["--help"]
