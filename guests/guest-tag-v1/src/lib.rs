//! Test guest: copies every event to the `out` topic with the extension
//! `tagversion` = "1", so a test can tell which version of a function handled an event.
//! `guest-tag-v1` and `guest-tag-v2` differ only in that number.

use weir_guest::{Error, Event, ExtensionValue, Function, Output};

const VERSION: &str = "1";

struct Tag;

impl Function for Tag {
    fn handle(mut event: Event) -> Result<Vec<Output>, Error> {
        event.set_extension("tagversion", ExtensionValue::String(VERSION.into()));
        Ok(vec![Output::to("out", event)])
    }
}

weir_guest::export_function!(Tag);
