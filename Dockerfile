# userdata: the service image. docker-compose.yml runs it against MinIO and PostgreSQL.
# Debian's release is pinned with Python's minor, so a rebuild does not move to another base.
FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, from the package's metadata alone: editing the code does not reinstall them.
# Each at its version in constraints.txt (`make constraints`), the one `make test` tests.
COPY setup.cfg pyproject.toml constraints.txt ./
RUN python -c "import configparser; c = configparser.ConfigParser(); c.read('setup.cfg'); print(c['options']['install_requires'])" > requirements.txt \
    && pip install -r requirements.txt -c constraints.txt

# The package itself; its dependencies are all in place already.
COPY README.md ./
COPY userdata ./userdata
RUN pip install --no-deps . && rm -rf build *.egg-info

RUN groupadd --system userdata && useradd --system --gid userdata --no-create-home --shell /usr/sbin/nologin userdata
USER userdata

ENV USERDATA_HOST=0.0.0.0
EXPOSE 8080

# Liveness (/livez): it answers while the process serves, a first load of any length included,
# so a long load never marks the container unhealthy. Readiness for a load balancer is /readyz
# (503 until loaded). The slim image has no curl: Python asks.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/livez', timeout=4)"]

CMD ["userdata", "serve"]
