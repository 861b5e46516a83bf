//! Write a llama-architecture GGUF out as a safetensors directory (F32 weights, `config.json`,
//! `tokenizer.json`), e.g. to test the safetensors loader on the same weights.
//!
//! usage: cargo run --release -p llorch-engine --example export_safetensors -- MODEL.gguf OUT_DIR

use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [gguf, out] = args.as_slice() else {
        eprintln!("usage: export_safetensors MODEL.gguf OUT_DIR");
        std::process::exit(2);
    };
    llorch_engine::export::gguf_to_safetensors(gguf, out)?;
    println!("{}", out.display());
    Ok(())
}
