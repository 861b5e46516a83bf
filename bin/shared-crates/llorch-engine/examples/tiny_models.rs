//! Write the tiny random-weight models of every architecture fixture (`llorch_engine::tiny`),
//! for `scripts/arch-fixtures.py`, which runs llama.cpp on them.
//!
//! usage: target/release/examples/tiny_models TOKENIZER.gguf OUT_DIR
//! (prints `NAME PATH` per model; TOKENIZER.gguf lends its vocabulary, e.g. SmolLM2's)

use std::path::PathBuf;

use llorch_engine::tiny::{write_gguf, TinyArch};

fn main() -> anyhow::Result<()> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [tokenizer, out] = args.as_slice() else {
        eprintln!("usage: tiny_models TOKENIZER.gguf OUT_DIR");
        std::process::exit(2);
    };
    std::fs::create_dir_all(out)?;
    for arch in TinyArch::ALL {
        let path = out.join(format!("{}.gguf", arch.name()));
        write_gguf(arch, tokenizer, &path)?;
        println!("{} {}", arch.name(), path.display());
    }
    Ok(())
}
