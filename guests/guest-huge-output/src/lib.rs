//! Test guest: `test.many` returns 1,000 outputs, `test.big` one output with 4 MiB of
//! data; anything else is forwarded to `out`.

use weir_guest::{Error, Event, Function, Output};

struct HugeOutput;

impl Function for HugeOutput {
    fn handle(event: Event) -> Result<Vec<Output>, Error> {
        match event.type_.as_str() {
            "test.many" => Ok((0..1000)
                .map(|_| Output::to("out", event.clone()))
                .collect()),
            "test.big" => {
                let mut big = event;
                big.datacontenttype = Some("application/octet-stream".to_owned());
                big.data = Some(vec![b'x'; 4 << 20]);
                Ok(vec![Output::to("out", big)])
            }
            _ => Ok(vec![Output::to("out", event)]),
        }
    }
}

weir_guest::export_function!(HugeOutput);
