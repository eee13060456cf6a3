# bdn: node-local cache daemon for ML model weights.
# Build: docker build -t bdn .   Run: docker run -p 8080:8080 -v /mnt/nvme/bdn:/var/cache/bdn bdn
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY requirements.txt pyproject.toml README.md ./
COPY bdn ./bdn
RUN python -m venv /opt/bdn \
 && /opt/bdn/bin/pip install --no-cache-dir -r requirements.txt \
 && /opt/bdn/bin/pip install --no-cache-dir --no-deps .

FROM python:3.11-slim-bookworm
RUN groupadd --system --gid 10001 bdn \
 && useradd --system --uid 10001 --gid bdn --home-dir /nonexistent --shell /usr/sbin/nologin bdn \
 && mkdir -p /var/cache/bdn /etc/bdn \
 && chown bdn:bdn /var/cache/bdn
COPY --from=build /opt/bdn /opt/bdn
COPY deploy/container.yaml /etc/bdn/bdn.yaml
ENV PATH=/opt/bdn/bin:$PATH \
    BDN_CONFIG=/etc/bdn/bdn.yaml \
    PYTHONUNBUFFERED=1
USER 10001:10001
VOLUME ["/var/cache/bdn"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status != 200)"]
ENTRYPOINT ["bdn", "serve"]
