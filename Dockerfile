# One image for kiln's API and workers.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin kiln

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin kiln
COPY --from=build /src/target/release/kiln /usr/local/bin/kiln
USER kiln
ENV KILN_ADDR=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["kiln"]
CMD ["serve"]
