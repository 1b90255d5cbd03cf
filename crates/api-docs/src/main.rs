//! Prints the gateway's OpenAPI document: `cargo run --release -p api-docs > docs/openapi.json`.

fn main() {
    print!("{}", api_docs::render());
}
