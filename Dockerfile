# raftmq in an image with nothing but the binary. No registry is reachable on our machines, so
# nothing is pulled: the image starts FROM scratch and holds a fully static raftmq built on the
# host. Build both with scripts/image.sh (it builds the binary first).
FROM scratch
COPY target/static/image/raftmq /raftmq
# Client API (v2 gRPC + admin) and the peer (Raft) API.
EXPOSE 8081 9091
VOLUME ["/data"]
ENV RAFTMQ_DATA_DIR=/data \
    RAFTMQ_LISTEN=0.0.0.0:8081 \
    RAFTMQ_PEER_LISTEN=0.0.0.0:9091 \
    RAFTMQ_LOG=info,openraft=warn
ENTRYPOINT ["/raftmq"]
CMD ["server"]
