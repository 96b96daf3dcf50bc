# One image for the three services; docker-compose picks the command.
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY chassis ./chassis
COPY services ./services
COPY ops ./ops
RUN pip install . && useradd --system --uid 10001 kap
COPY config ./config
USER kap
ENV KAP_HTTP_HOST=0.0.0.0
CMD ["kap-intake"]
