fn main() -> Result<(), Box<dyn std::error::Error>> {
    // SAFETY: build scripts are single-threaded.
    unsafe { std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure()
        .bytes(".apache.rocketmq.v2.Message.body")
        .compile_protos(
            &["proto/apache/rocketmq/v2/service.proto", "proto/raftmq/admin.proto", "proto/raftmq/router.proto"],
            &["proto"],
        )?;
    Ok(())
}
