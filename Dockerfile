# The image every Argo task runs (`kedro argo render`, docs/deployment.md): the project installed
# from the exact versions of requirements-lock.txt (s3fs included, for conf/cloud's bucket). The
# catalog's data/ is not in the image: it is a volume mounted at /home/kedro/project/data
# (argo.volumes in conf/base/deploy.yml), or, with `-e cloud`, an object store plus a volume for the
# raw scans at data/01_raw (conf/cloud/).
#
#   docker build -t registry.example.org/tlkedro:$(git rev-parse --short HEAD) .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    KEDRO_DISABLE_TELEMETRY=true

# uid/gid 1000 match argo.fs_group, which makes mounted volumes writable for this user.
RUN groupadd --gid 1000 kedro && useradd --uid 1000 --gid 1000 --create-home kedro
WORKDIR /home/kedro/project

# Dependencies in their own layer, so a code change does not reinstall torch.
COPY requirements-lock.txt requirements-nodeps.txt ./
RUN pip install -r requirements-lock.txt && pip install --no-deps -r requirements-nodeps.txt

COPY . .
# conf/local is never copied (credentials); Kedro's default run environment needs the folder.
RUN pip install --no-deps . \
    && mkdir -p conf/local data logs \
    && chown -R kedro:kedro /home/kedro/project

USER kedro
VOLUME ["/home/kedro/project/data"]
CMD ["kedro", "run"]
