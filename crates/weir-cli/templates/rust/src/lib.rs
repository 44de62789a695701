//! `{{name}}`: a weir function. weir calls `handle` once per event of the pipeline's
//! `from` topics; each returned `Output` is published to its target topic, which must be
//! one of the pipeline's `to`.

use weir_guest::{Error, Event, Function, Output};

struct Handler;

impl Function for Handler {
    fn handle(event: Event) -> Result<Vec<Output>, Error> {
        // Forward every event unchanged to the topic `out`. Return `Err(Error::Fatal(..))`
        // for an event that can never succeed, `Err(Error::Retryable(..))` for one that
        // may succeed later.
        Ok(vec![Output::to("out", event)])
    }
}

weir_guest::export_function!(Handler);
