//! Prints the gateway's OpenAPI document: `cargo run --release -p api-docs > docs/openapi.json`.

const HELP: &str = "Prints the gateway's OpenAPI document (both services' routes) to stdout.

Usage: api-docs > docs/openapi.json

Options:
  -h, --help  Print this help";

fn main() {
    // Hand-rolled: one flag does not justify clap in this binary.
    match std::env::args().nth(1).as_deref() {
        None => print!("{}", api_docs::render()),
        Some("-h" | "--help") => println!("{HELP}"),
        Some(other) => {
            eprintln!("api-docs: unexpected argument {other:?}\n\n{HELP}");
            std::process::exit(2);
        }
    }
}
