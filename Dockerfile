# One image for the collector, the dashboard and the demo shop's services.
FROM python:3.11.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY instrumentation/ instrumentation/
COPY collector/ collector/
COPY dashboard/ dashboard/
RUN pip install ./instrumentation[postgres] ./collector ./dashboard

RUN useradd --create-home --uid 10001 choreoscope
USER choreoscope
ENTRYPOINT ["choreoscope"]
CMD ["--help"]
