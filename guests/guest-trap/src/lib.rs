//! Test guest: panics (a wasm trap) on events of type `test.trap`, returns a fatal error on
//! `test.fatal`, and forwards every other event unchanged to the `out` topic.

use weir_guest::{Error, Event, Function, Output};

struct Trap;

impl Function for Trap {
    fn handle(event: Event) -> Result<Vec<Output>, Error> {
        match event.type_.as_str() {
            "test.trap" => panic!("guest-trap was asked to trap on event {}", event.id),
            "test.fatal" => Err(Error::Fatal(format!("event {} is poison", event.id))),
            _ => Ok(vec![Output::to("out", event)]),
        }
    }
}

weir_guest::export_function!(Trap);
