//! Test guest: a plain `wasm32-wasip2` program, i.e. a component of the `wasi:cli/command`
//! world. weir must reject it: it does not export `handle`.

fn main() {
    println!("i am not a weir function");
}
