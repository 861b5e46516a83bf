fn main() {
    eprintln!("llorch-pool: not implemented yet");
    std::process::exit(2);
}
