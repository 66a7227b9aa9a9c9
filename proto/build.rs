//! Compiles the protobuf contract with a vendored `protoc`, so a fresh machine needs no
//! system protobuf compiler. A `PROTOC` already set in the environment wins.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        let protoc = protoc_bin_vendored::protoc_bin_path()?;
        // SAFETY: build scripts are single-threaded; nothing else reads the environment here.
        unsafe { std::env::set_var("PROTOC", protoc) };
    }
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("tillstream_descriptor.bin"))
        .compile_protos(
            &[
                "tillstream/user/v1/user.proto",
                "tillstream/order/v1/order.proto",
                "tillstream/audit/v1/audit.proto",
            ],
            &["."],
        )?;
    println!("cargo:rerun-if-changed=tillstream");
    Ok(())
}
