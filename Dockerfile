# The unbaked image: the static binary and nothing else (no shell, no libc,
# no package manager), for the sidecar in Compose or Kubernetes.
#
#   scripts/build-static            # target/x86_64-unknown-linux-gnu/release/unbaked
#   docker build -t unbaked:dev .   # .dockerignore sends only that file
#
# As a sidecar (examples/compose/ has the whole setup):
#   docker run --read-only --network none --label app=billing \
#     -v billing-secrets:/run/secrets \
#     -v /run/unbaked/broker.sock:/run/unbaked/broker.sock \
#     unbaked:dev sidecar --workload billing --dir /run/secrets
FROM scratch
COPY target/x86_64-unknown-linux-gnu/release/unbaked /usr/local/bin/unbaked
ENV UNBAKED_SOCKET=/run/unbaked/broker.sock
ENTRYPOINT ["/usr/local/bin/unbaked"]
CMD ["--help"]
