//! Writes the OpenAPI document that the code generates to
//! `openapi/openapi.json`, or with `--check` fails when the checked-in
//! document differs from it (CI runs the check).

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> anyhow::Result<ExitCode> {
    let check = std::env::args().any(|arg| arg == "--check");
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
    let generated = cairn_api::openapi::document().to_pretty_json()? + "\n";
    if check {
        let stored = std::fs::read_to_string(&path).unwrap_or_default();
        if stored != generated {
            eprintln!(
                "{} differs from the document the code generates; run `cargo run -p cairn-openapi` and commit the result",
                path.display()
            );
            return Ok(ExitCode::FAILURE);
        }
        println!("{} is up to date", path.display());
    } else {
        std::fs::write(&path, generated)?;
        println!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}
