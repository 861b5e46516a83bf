fn main() {
    eprintln!("orchestratord: not implemented yet");
    std::process::exit(2);
}
