//! Generates the gRPC clients for the few Ray calls Flotilla makes, from Flotilla's own minimal
//! `.proto` files in `proto/`. The files are compiled in pure Rust (protox): no `protoc` needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/ray_node_manager.proto",
        "proto/ray_autoscaler.proto",
        "proto/ray_gcs.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
