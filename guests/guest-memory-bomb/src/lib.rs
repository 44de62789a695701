//! Test guest: allocates (and touches) memory without end on events of type
//! `test.bomb`; the memory limit must stop it. Other events are forwarded to `out`.

use weir_guest::{Error, Event, Function, Output};

struct MemoryBomb;

impl Function for MemoryBomb {
    fn handle(event: Event) -> Result<Vec<Output>, Error> {
        if event.type_ == "test.bomb" {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![0xA5; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        Ok(vec![Output::to("out", event)])
    }
}

weir_guest::export_function!(MemoryBomb);
