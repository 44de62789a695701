//! Write weir functions in Rust: the guest side of the `weir:function` WIT world.
//!
//! A function is a type that implements [`Function`] and is exported with
//! [`export_function!`]:
//!
//! ```ignore
//! struct Hello;
//! impl weir_guest::Function for Hello {
//!     fn handle(event: weir_guest::Event) -> Result<Vec<weir_guest::Output>, weir_guest::Error> {
//!         Ok(vec![weir_guest::Output::to("greetings", event)])
//!     }
//! }
//! weir_guest::export_function!(Hello);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2`; the `.wasm` is a component.
//!
//! Compiled for any other target, [`config`] and [`kv`] read the in-memory values of
//! [`native`] instead of asking a host, so a function's logic can be called natively
//! (`weir bench wasm` measures the example's this way, beside its wasm).

// The SDK's allocator (`weir-guest-alloc`) becomes the function's global allocator;
// nothing of it is named, so the crate is linked here.
#[cfg(feature = "allocator")]
extern crate weir_guest_alloc as _;

// The generated bindings and export macro name their runtime through this crate, so a
// function depends on `weir-guest` alone.
extern crate self as weir_guest;
#[doc(hidden)]
pub use wit_bindgen;

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "weir:function/handler",
        pub_export_macro: true,
        export_macro_name: "export_function",
        default_bindings_module: "weir_guest::bindings",
        runtime_path: "weir_guest::wit_bindgen::rt",
        generate_all,
    });
}

pub use bindings::Guest as Function;
pub use bindings::export_function;
pub use bindings::weir::function::types::{Error, Event, ExtensionValue, Output};

/// What [`Event::set_json`] reserves for the serialized data.
const JSON_CAPACITY: usize = 512;

/// The CloudEvents spec version every event has.
pub const SPEC_VERSION: &str = "1.0";

impl Event {
    /// A new event with no data and no optional attributes. An empty `id` lets weir pick a
    /// stable one derived from the input event.
    pub fn new(source: impl Into<String>, ty: impl Into<String>) -> Self {
        Event {
            id: String::new(),
            source: source.into(),
            type_: ty.into(),
            subject: None,
            time: None,
            datacontenttype: None,
            dataschema: None,
            extensions: Vec::new(),
            data: None,
        }
    }

    /// Parse the event's data as JSON; malformed data is a fatal error (retrying will not
    /// fix it). `T` may borrow from the event (`&'a str`, `Cow<'a, str>` fields), which
    /// saves a copy of each string that holds no escapes.
    pub fn json<'a, T: serde::Deserialize<'a>>(&'a self) -> Result<T, Error> {
        let data = self
            .data
            .as_deref()
            .ok_or_else(|| Error::Fatal(format!("event {} has no data", self.id)))?;
        serde_json::from_slice(data).map_err(|e| {
            Error::Fatal(format!(
                "event {} data is not the expected JSON: {e}",
                self.id
            ))
        })
    }

    /// Replace the data with `value` serialized as JSON, and set `datacontenttype`.
    pub fn set_json<T: serde::Serialize>(&mut self, value: &T) -> Result<(), Error> {
        // Start at a size that fits most events, rather than growing the vector from
        // nothing several times over.
        let mut bytes = Vec::with_capacity(JSON_CAPACITY);
        serde_json::to_writer(&mut bytes, value)
            .map_err(|e| Error::Fatal(format!("cannot serialize output data: {e}")))?;
        self.data = Some(bytes);
        self.datacontenttype = Some("application/json".to_owned());
        Ok(())
    }

    /// Builder form of [`Event::set_json`].
    pub fn with_json<T: serde::Serialize>(mut self, value: &T) -> Result<Self, Error> {
        self.set_json(value)?;
        Ok(self)
    }

    /// The value of an extension attribute.
    pub fn extension(&self, name: &str) -> Option<&ExtensionValue> {
        self.extensions
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }

    /// Set (or replace) an extension attribute.
    pub fn set_extension(&mut self, name: impl Into<String>, value: ExtensionValue) {
        let name = name.into();
        self.extensions.retain(|(n, _)| *n != name);
        self.extensions.push((name, value));
    }
}

impl Output {
    /// Publish `event` to the output topic `target`.
    pub fn to(target: impl Into<String>, event: Event) -> Self {
        Output {
            target: target.into(),
            event,
        }
    }
}

/// Configuration values granted to the function in `weir.toml` (`wasi:config`).
///
/// A function instance runs one version of the function with one set of config values
/// (weir starts new instances when a deploy changes them), so each key is asked of the
/// host once per instance and remembered: later events read it without a host call.
pub mod config {
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    #[cfg(target_arch = "wasm32")]
    use crate::bindings::wasi::config::store;
    #[cfg(not(target_arch = "wasm32"))]
    use crate::native::config as store;

    thread_local! {
        static VALUES: RefCell<BTreeMap<String, Option<String>>> =
            const { RefCell::new(BTreeMap::new()) };
    }

    /// The value of `key`, if the function's config has it.
    pub fn get(key: &str) -> Option<String> {
        if let Some(value) = VALUES.with_borrow(|values| values.get(key).cloned()) {
            return value;
        }
        // A failed lookup is not remembered: it may succeed on a later try.
        let value = store::get(key).ok()?;
        VALUES.with_borrow_mut(|values| values.insert(key.to_owned(), value.clone()));
        value
    }

    /// The value of `key`, or a fatal error naming the missing key.
    pub fn require(key: &str) -> Result<String, crate::Error> {
        get(key).ok_or_else(|| {
            crate::Error::Fatal(format!(
                "config key {key:?} is not set; add it under the function's config in weir.toml"
            ))
        })
    }

    /// `key` parsed as a number, or a fatal error.
    pub fn require_f64(key: &str) -> Result<f64, crate::Error> {
        let raw = require(key)?;
        raw.trim().parse().map_err(|_| {
            crate::Error::Fatal(format!("config key {key:?} is {raw:?}, not a number"))
        })
    }
}

/// Key-value namespaces granted in `weir.toml` (`wasi:keyvalue/store`), e.g. customer
/// master data.
///
/// A namespace opened once stays open for the instance's life (its grants cannot change
/// while it runs), so opening it again for the next event costs no host call.
pub mod kv {
    use std::cell::RefCell;
    use std::collections::BTreeMap;
    use std::rc::Rc;

    #[cfg(target_arch = "wasm32")]
    use crate::bindings::wasi::keyvalue::store;
    #[cfg(not(target_arch = "wasm32"))]
    use crate::native::keyvalue as store;

    thread_local! {
        static OPEN: RefCell<BTreeMap<String, Rc<store::Bucket>>> =
            const { RefCell::new(BTreeMap::new()) };
    }

    /// An open namespace.
    pub struct Bucket {
        namespace: String,
        bucket: Rc<store::Bucket>,
    }

    fn error(namespace: &str, e: store::Error) -> crate::Error {
        match e {
            store::Error::AccessDenied => crate::Error::Fatal(format!(
                "key-value namespace {namespace:?} is not granted to this function; grant it in weir.toml"
            )),
            store::Error::NoSuchStore => {
                crate::Error::Fatal(format!("key-value namespace {namespace:?} does not exist"))
            }
            store::Error::Other(message) => {
                crate::Error::Retryable(format!("key-value namespace {namespace:?}: {message}"))
            }
        }
    }

    /// Open a namespace granted under `capabilities.keyvalue`. A namespace that is not
    /// granted fails every time it is opened.
    pub fn open(namespace: &str) -> Result<Bucket, crate::Error> {
        let open = OPEN.with_borrow(|open| open.get(namespace).cloned());
        let bucket = match open {
            Some(bucket) => bucket,
            None => {
                let bucket = Rc::new(store::open(namespace).map_err(|e| error(namespace, e))?);
                OPEN.with_borrow_mut(|open| open.insert(namespace.to_owned(), bucket.clone()));
                bucket
            }
        };
        Ok(Bucket {
            namespace: namespace.to_owned(),
            bucket,
        })
    }

    impl Bucket {
        /// The value of `key`, if there is one.
        pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, crate::Error> {
            self.bucket.get(key).map_err(|e| error(&self.namespace, e))
        }

        /// The value of `key` parsed as JSON; a value that is not the expected JSON is a
        /// fatal error.
        pub fn get_json<T: serde::de::DeserializeOwned>(
            &self,
            key: &str,
        ) -> Result<Option<T>, crate::Error> {
            match self.get(key)? {
                None => Ok(None),
                Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                    crate::Error::Fatal(format!(
                        "key {key:?} of namespace {:?} is not the expected JSON: {e}",
                        self.namespace
                    ))
                }),
            }
        }

        pub fn set(&self, key: &str, value: &[u8]) -> Result<(), crate::Error> {
            self.bucket
                .set(key, value)
                .map_err(|e| error(&self.namespace, e))
        }

        pub fn delete(&self, key: &str) -> Result<(), crate::Error> {
            self.bucket
                .delete(key)
                .map_err(|e| error(&self.namespace, e))
        }

        pub fn exists(&self, key: &str) -> Result<bool, crate::Error> {
            self.bucket
                .exists(key)
                .map_err(|e| error(&self.namespace, e))
        }
    }
}

/// In-memory stand-ins for the host's config and key-value store, on targets other than
/// wasm: a function's logic called natively reads what the calling thread set here.
#[cfg(not(target_arch = "wasm32"))]
pub mod native {
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    thread_local! {
        static CONFIG: RefCell<BTreeMap<String, String>> = const { RefCell::new(BTreeMap::new()) };
        static KEYVALUE: RefCell<BTreeMap<(String, String), Vec<u8>>> =
            const { RefCell::new(BTreeMap::new()) };
    }

    /// Set a config value for this thread's calls.
    pub fn set_config(key: &str, value: &str) {
        CONFIG.with_borrow_mut(|c| c.insert(key.to_owned(), value.to_owned()));
    }

    /// Set a key-value entry for this thread's calls.
    pub fn set_keyvalue(namespace: &str, key: &str, value: &[u8]) {
        KEYVALUE.with_borrow_mut(|kv| {
            kv.insert((namespace.to_owned(), key.to_owned()), value.to_vec())
        });
    }

    /// `wasi:config/store`, as [`crate::config`] calls it.
    pub(crate) mod config {
        pub(crate) fn get(key: &str) -> Result<Option<String>, ()> {
            Ok(super::CONFIG.with_borrow(|c| c.get(key).cloned()))
        }
    }

    /// `wasi:keyvalue/store`, as [`crate::kv`] calls it.
    pub(crate) mod keyvalue {
        use super::KEYVALUE;

        /// The host's errors, of which the in-memory store makes none.
        #[allow(dead_code)]
        pub(crate) enum Error {
            AccessDenied,
            NoSuchStore,
            Other(String),
        }

        pub(crate) struct Bucket(String);

        pub(crate) fn open(namespace: &str) -> Result<Bucket, Error> {
            Ok(Bucket(namespace.to_owned()))
        }

        impl Bucket {
            fn entry(&self, key: &str) -> (String, String) {
                (self.0.clone(), key.to_owned())
            }
            pub(crate) fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
                Ok(KEYVALUE.with_borrow(|kv| kv.get(&self.entry(key)).cloned()))
            }
            pub(crate) fn set(&self, key: &str, value: &[u8]) -> Result<(), Error> {
                KEYVALUE.with_borrow_mut(|kv| kv.insert(self.entry(key), value.to_vec()));
                Ok(())
            }
            pub(crate) fn delete(&self, key: &str) -> Result<(), Error> {
                KEYVALUE.with_borrow_mut(|kv| kv.remove(&self.entry(key)));
                Ok(())
            }
            pub(crate) fn exists(&self, key: &str) -> Result<bool, Error> {
                Ok(KEYVALUE.with_borrow(|kv| kv.contains_key(&self.entry(key))))
            }
        }
    }
}

/// Outbound HTTP to hosts granted under `capabilities.http` (`wasi:http`). A request to
/// any other host fails and ends the call with weir's capability-denied error.
pub mod http {
    use crate::bindings::wasi::http::outgoing_handler;
    use crate::bindings::wasi::http::types::{
        Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, Scheme,
    };

    /// A response: status and the whole body.
    #[derive(Debug, Clone)]
    pub struct Response {
        pub status: u16,
        pub body: Vec<u8>,
    }

    impl Response {
        /// The body parsed as JSON; anything else is a fatal error.
        pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, crate::Error> {
            serde_json::from_slice(&self.body)
                .map_err(|e| crate::Error::Fatal(format!("response is not the expected JSON: {e}")))
        }
    }

    /// `GET url`.
    pub fn get(url: &str) -> Result<Response, crate::Error> {
        send("GET", url, &[], None)
    }

    /// Send a request and read the whole response. Transport failures are retryable.
    pub fn send(
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Response, crate::Error> {
        let fatal = |m: String| crate::Error::Fatal(m);
        let retryable = |m: String| crate::Error::Retryable(m);
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| fatal(format!("{url:?} is not an absolute http(s) URL")))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let fields = Fields::new();
        for (name, value) in headers {
            fields
                .append(name, value.as_bytes())
                .map_err(|e| fatal(format!("header {name:?}: {e:?}")))?;
        }
        let request = OutgoingRequest::new(fields);
        let method = match method.to_ascii_uppercase().as_str() {
            "GET" => Method::Get,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "PATCH" => Method::Patch,
            "HEAD" => Method::Head,
            other => Method::Other(other.to_owned()),
        };
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            other => return Err(fatal(format!("scheme {other:?} is not http or https"))),
        };
        let invalid = |what: &str| fatal(format!("invalid {what} in {url:?}"));
        request.set_method(&method).map_err(|_| invalid("method"))?;
        request
            .set_scheme(Some(&scheme))
            .map_err(|_| invalid("scheme"))?;
        request
            .set_authority(Some(authority))
            .map_err(|_| invalid("host"))?;
        request
            .set_path_with_query(Some(path))
            .map_err(|_| invalid("path"))?;
        let outgoing = request
            .body()
            .map_err(|_| fatal("request body taken".into()))?;
        if let Some(body) = body {
            let stream = outgoing
                .write()
                .map_err(|_| fatal("request body stream taken".into()))?;
            for chunk in body.chunks(4096) {
                stream
                    .blocking_write_and_flush(chunk)
                    .map_err(|e| retryable(format!("sending the request body: {e:?}")))?;
            }
        }
        let future = outgoing_handler::handle(request, None)
            .map_err(|e| retryable(format!("HTTP request to {url} failed: {e:?}")))?;
        OutgoingBody::finish(outgoing, None)
            .map_err(|e| retryable(format!("sending the request body: {e:?}")))?;
        let response = loop {
            match future.get() {
                Some(result) => break result,
                None => future.subscribe().block(),
            }
        };
        let response = response
            .map_err(|_| retryable("HTTP response was taken twice".into()))?
            .map_err(|e| retryable(format!("HTTP request to {url} failed: {e:?}")))?;
        let status = response.status();
        let incoming = response
            .consume()
            .map_err(|_| retryable("HTTP response body taken".into()))?;
        let stream = incoming
            .stream()
            .map_err(|_| retryable("HTTP response body stream taken".into()))?;
        let mut body = Vec::new();
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => body.extend_from_slice(&chunk),
                Err(crate::bindings::wasi::io::streams::StreamError::Closed) => break,
                Err(e) => return Err(retryable(format!("reading the response from {url}: {e:?}"))),
            }
        }
        drop(stream);
        let _ = IncomingBody::finish(incoming);
        Ok(Response { status, body })
    }
}

/// Logging into weir's logs, tagged with the function's name and version (`wasi:logging`).
pub mod log {
    use crate::bindings::wasi::logging::logging::{Level, log};

    pub fn debug(message: &str) {
        log(Level::Debug, "", message);
    }
    pub fn info(message: &str) {
        log(Level::Info, "", message);
    }
    pub fn warn(message: &str) {
        log(Level::Warn, "", message);
    }
    pub fn error(message: &str) {
        log(Level::Error, "", message);
    }
}
