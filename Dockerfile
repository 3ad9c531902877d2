# The fledge controller image: a release build with the default policy embedded (build.rs compiles it from
# policies/default), on a distroless base running as non-root. Where no registry is reachable,
# scripts/image.sh (make image) assembles the same layout with buildah FROM scratch.
FROM docker.io/library/rust:1.95-bookworm AS build
RUN rustup target add wasm32-unknown-unknown
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin fledge

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/fledge /usr/local/bin/fledge
# Compiled policies are cached here (an emptyDir in deploy/, the root filesystem is read-only).
ENV FLEDGE_POLICY_CACHE=/var/cache/fledge
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/fledge"]
CMD ["controller"]
