# One image for every role: Mishale workers, the training server and the partner agent.
FROM python:3.11-slim
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
WORKDIR /app
# CPU-only torch first, so the pinned torch==2.13.0 below does not pull a CUDA build.
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
COPY pyproject.toml setup.py README.md ./
COPY mshale_fl mshale_fl
COPY schemas schemas
COPY broker broker
COPY audit audit
COPY agents agents
RUN pip install '.[postgres]'
USER nobody
ENTRYPOINT ["mshale-fl"]
