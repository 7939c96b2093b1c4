# Hopper: one process, embedded defaults, data in the /data volume.
FROM python:3.11-slim

# libmagic: file type detection from the bytes.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libmagic1 \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /srv/hopper
COPY pyproject.toml constraints.txt README.md ./
COPY app ./app
RUN pip install --no-cache-dir -c constraints.txt . \
 && useradd --system --home-dir /data hopper \
 && mkdir -p /data && chown hopper /data

USER hopper
ENV HOPPER_DATA_DIR=/data
VOLUME ["/data"]
EXPOSE 8000
# The same command as scripts/serve (its uvicorn options live in app/serving.py),
# listening on all interfaces of the container.
ENV HOST=0.0.0.0 PORT=8000
CMD ["hopper", "serve"]
