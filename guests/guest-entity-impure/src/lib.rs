//! Test guest: an entity counting its events. `handle` reads the key-value namespace
//! `customers` (allowed there when granted) and accepts one `Counted` event; `apply` of an
//! event of type `Impure` opens the namespace too, which weir denies during `apply`. The
//! command `big` with data N accepts one event whose data is a string of N bytes.

use weir_guest_entity::bindings::wasi::keyvalue::store;
use weir_guest_entity::{Command, Decision, Entity, Error, Event, NewEvent};

#[derive(serde::Serialize, serde::Deserialize)]
struct Count(u64);

fn open() -> Result<store::Bucket, Error> {
    store::open("customers").map_err(|e| Error::Fatal(format!("cannot open customers: {e:?}")))
}

impl Entity for Count {
    type State = Count;

    fn handle(_state: Option<&Count>, command: &Command) -> Result<Decision, Error> {
        if command.name == "big" {
            let n: usize = command.json()?;
            return Ok(Decision::accept([NewEvent::json("Big", &"x".repeat(n))?]));
        }
        open()?;
        let ty = if command.name == "impure" { "Impure" } else { "Counted" };
        Ok(Decision::accept([NewEvent::json(ty, &1)?]))
    }

    fn apply(state: Option<Count>, event: &Event) -> Result<Option<Count>, Error> {
        if event.type_ == "Impure" {
            open()?;
        }
        Ok(Some(Count(state.map_or(0, |c| c.0) + 1)))
    }
}

weir_guest_entity::export_entity!(Count);
