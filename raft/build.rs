fn main() -> Result<(), Box<dyn std::error::Error>> {
    // SAFETY: build scripts are single-threaded.
    unsafe { std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    println!("cargo:rerun-if-changed=../proto/raftmq/peer.proto");
    tonic_prost_build::configure()
        .bytes(".raftmq.peer.RaftPayload.data")
        .compile_protos(&["../proto/raftmq/peer.proto"], &["../proto"])?;
    Ok(())
}
