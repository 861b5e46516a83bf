fn main() {
    eprintln!("llorch: not implemented yet");
    std::process::exit(2);
}
