//! Test guest: forwards every event unchanged to the `out` topic; the trivial function
//! `weir bench wasm` measures cold starts and call overhead with.

use weir_guest::{Error, Event, Function, Output};

struct Echo;

impl Function for Echo {
    fn handle(event: Event) -> Result<Vec<Output>, Error> {
        Ok(vec![Output::to("out", event)])
    }
}

weir_guest::export_function!(Echo);
