//! Compiles `gantry/v1/gantry.proto` with protox (no system `protoc`) into tonic/prost code in
//! `OUT_DIR`, and writes the encoded file descriptor set that the coordinator serves for gRPC
//! reflection.

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "gantry/v1/gantry.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["."])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("gantry_v1_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        // Step metrics are also kept in the coordinator's JSON job records.
        // Lines written before a field existed read as its default.
        .message_attribute(
            "gantry.v1.StepMetrics",
            "#[derive(serde::Serialize, serde::Deserialize)] #[serde(default)]",
        )
        // Only the steps that evaluated carry the field in `metrics.jsonl`.
        .field_attribute(
            "gantry.v1.StepMetrics.evaluation",
            "#[serde(skip_serializing_if = \"Option::is_none\")]",
        )
        .message_attribute(
            "gantry.v1.Evaluation",
            "#[derive(serde::Serialize, serde::Deserialize)] #[serde(default)]",
        )
        .message_attribute(
            "gantry.v1.ClassEvaluation",
            "#[derive(serde::Serialize, serde::Deserialize)] #[serde(default)]",
        )
        .compile_fds(fds)?;
    Ok(())
}
