# One image for kiln's API and workers.
FROM rust:1.95-bookworm AS build
WORKDIR /src
# The preview worker encodes JPEG with libjpeg-turbo.
RUN apt-get update && apt-get install -y --no-install-recommends libturbojpeg0-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cargo build --release --locked --bin kiln

# libpdfium for the preview worker, from the pinned pypdfium2 wheel on PyPI
# (version and SHA-256 in scripts/install-pdfium).
FROM python:3.11-slim-bookworm AS pdfium
RUN apt-get update && apt-get install -y --no-install-recommends unzip && rm -rf /var/lib/apt/lists/*
COPY scripts/install-pdfium /usr/local/bin/install-pdfium
RUN install-pdfium /opt/pdfium/lib

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates fonts-dejavu-core fonts-liberation2 \
      libreoffice-writer-nogui libreoffice-calc-nogui libreoffice-impress-nogui libreoffice-draw-nogui \
      python3-uno util-linux ffmpeg mupdf-tools qpdf libturbojpeg0 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin kiln
COPY --from=pdfium /opt/pdfium/lib/libpdfium.so /opt/pdfium/lib/libpdfium.so
COPY --from=build /src/target/release/kiln /usr/local/bin/kiln
USER kiln
ENV KILN_ADDR=0.0.0.0:8080 PDFIUM_LIB_PATH=/opt/pdfium/lib/libpdfium.so
EXPOSE 8080
ENTRYPOINT ["kiln"]
CMD ["serve"]
