//! Test guest: spins forever on every event; the deadline must stop it.

use weir_guest::{Error, Event, Function, Output};

struct InfiniteLoop;

impl Function for InfiniteLoop {
    fn handle(event: Event) -> Result<Vec<Output>, Error> {
        let mut n: u64 = 0;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
            if n == u64::MAX {
                return Ok(vec![Output::to("out", event)]);
            }
        }
    }
}

weir_guest::export_function!(InfiniteLoop);
