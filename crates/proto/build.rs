//! Generates the `flotilla.v1` messages and the `Fleet` service's client and server from
//! `proto/flotilla/v1/fleet.proto`. The file is compiled in pure Rust (protox): no `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/flotilla/v1/fleet.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        // Messages that carry secrets get a hand-written, redacting `Debug` (src/redact.rs).
        .skip_debug([
            "flotilla.v1.JoinRequest",
            "flotilla.v1.JoinReply",
            "flotilla.v1.RaySpec",
            "flotilla.v1.InviteReply",
            "flotilla.v1.PreviousNode",
            "flotilla.v1.FinishJoinRequest",
        ])
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
