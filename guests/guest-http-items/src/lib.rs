//! An HTTP handler in the `weir:function/http-handler` world, on the raw bindings:
//! `GET|PUT|DELETE /items/{id}` keep items in the `items` key-value namespace, and a PUT or
//! DELETE publishes an `com.example.item.changed` event to `items.changes`. For tests:
//! `/misbehave/{what}` does what a hostile or broken handler does; `/hello` answers
//! `hello` (what `weir bench http` calls); `/count` answers how many requests this
//! instance has served (1 on a fresh instance); `/fetch` GETs the URL in config
//! `upstream` and answers its status and body (an API facade, for tests of requests that
//! wait on the network). Under `/reused/` the same paths answer as they do at the root (a
//! second route, for tests of instance reuse).

wit_bindgen::generate!({
    path: "../../wit",
    world: "weir:function/http-handler",
    generate_all,
});

use exports::wasi::http::incoming_handler::Guest;
use wasi::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use weir::function::types::Event;

struct Items;

/// Requests of `/count` this instance served.
static SERVED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Guest for Items {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let path = match path.strip_prefix("/reused") {
            Some(rest) => rest.to_owned(),
            None => path,
        };
        let method = request.method();
        let body = read_body(&request);
        // The benchmark's trivial route.
        if path == "/hello" {
            return respond(out, 200, "text/plain", b"hello\n");
        }
        if path == "/count" {
            let served = SERVED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            return respond(out, 200, "text/plain", format!("{served}").as_bytes());
        }
        if path == "/fetch" {
            return match fetch() {
                Ok((status, body)) => respond(out, status, "text/plain", &body),
                Err(e) => respond(out, 502, "text/plain", e.as_bytes()),
            };
        }
        if let Some(what) = path.strip_prefix("/misbehave/") {
            return misbehave(what, out);
        }
        let Some(id) = path.strip_prefix("/items/").filter(|id| !id.is_empty()) else {
            return respond(out, 404, "text/plain", b"no such path\n");
        };
        let bucket = match wasi::keyvalue::store::open("items") {
            Ok(bucket) => bucket,
            Err(e) => return respond(out, 500, "text/plain", format!("{e:?}\n").as_bytes()),
        };
        match method {
            Method::Get => match bucket.get(id) {
                Ok(Some(value)) => respond(out, 200, "application/json", &value),
                Ok(None) => respond(out, 404, "text/plain", b"no such item\n"),
                Err(e) => respond(out, 500, "text/plain", format!("{e:?}\n").as_bytes()),
            },
            Method::Put => {
                let existed = matches!(bucket.exists(id), Ok(true));
                if let Err(e) = bucket.set(id, &body) {
                    return respond(out, 500, "text/plain", format!("{e:?}\n").as_bytes());
                }
                match changed(id, "put", Some(body.clone())) {
                    Ok(offset) => {
                        let status = if existed { 200 } else { 201 };
                        let answer = format!("{{\"id\":\"{id}\",\"offset\":{offset}}}");
                        respond(out, status, "application/json", answer.as_bytes())
                    }
                    Err(e) => respond(out, 503, "text/plain", e.as_bytes()),
                }
            }
            Method::Delete => {
                if !matches!(bucket.exists(id), Ok(true)) {
                    return respond(out, 404, "text/plain", b"no such item\n");
                }
                if let Err(e) = bucket.delete(id) {
                    return respond(out, 500, "text/plain", format!("{e:?}\n").as_bytes());
                }
                match changed(id, "delete", None) {
                    Ok(_) => respond(out, 204, "text/plain", b""),
                    Err(e) => respond(out, 503, "text/plain", e.as_bytes()),
                }
            }
            _ => respond(out, 405, "text/plain", b"GET, PUT or DELETE\n"),
        }
    }
}

/// Publishes the change; the offset it was stored at.
fn changed(id: &str, op: &str, data: Option<Vec<u8>>) -> Result<u64, String> {
    let data = match data {
        Some(item) => format!(
            "{{\"id\":\"{id}\",\"op\":\"{op}\",\"item\":{}}}",
            String::from_utf8_lossy(&item)
        ),
        None => format!("{{\"id\":\"{id}\",\"op\":\"{op}\"}}"),
    };
    let event = Event {
        id: String::new(),
        source: String::new(),
        type_: "com.example.item.changed".into(),
        subject: Some(id.into()),
        time: None,
        datacontenttype: Some("application/json".into()),
        dataschema: None,
        extensions: Vec::new(),
        data: Some(data.into_bytes()),
    };
    weir::function::events::publish("items.changes", &event).map(|r| r.offset)
}

fn misbehave(what: &str, out: ResponseOutparam) {
    match what {
        // Runs past any deadline.
        "spin" => {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        // Returns without a response.
        "silent" => drop(out),
        // A body of 4 MiB, past the default output limit.
        "huge" => respond(out, 200, "application/octet-stream", &vec![b'x'; 4 << 20]),
        // Publishes to a topic it was not granted.
        "publish-elsewhere" => {
            let event = Event {
                id: String::new(),
                source: String::new(),
                type_: "x".into(),
                subject: None,
                time: None,
                datacontenttype: None,
                dataschema: None,
                extensions: Vec::new(),
                data: None,
            };
            let result = weir::function::events::publish("secrets", &event);
            respond(out, 200, "text/plain", format!("{result:?}").as_bytes())
        }
        "trap" => panic!("the handler traps"),
        // Counts as `/count` does, then returns with its response body still open.
        "open" => {
            SERVED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let response = OutgoingResponse::new(Fields::new());
            let Ok(body) = response.body() else { return };
            ResponseOutparam::set(out, Ok(response));
            if let Ok(stream) = body.write() {
                let _ = stream.blocking_write_and_flush(b"partial");
                std::mem::forget(stream);
            }
            std::mem::forget(body);
        }
        // Writes three chunks into the body before handing the response over: the second
        // waits for a reader that does not exist yet, until the deadline.
        "stuck" => {
            let response = OutgoingResponse::new(Fields::new());
            let Ok(body) = response.body() else { return };
            if let Ok(stream) = body.write() {
                for _ in 0..3 {
                    let _ = stream.blocking_write_and_flush(&[b'x'; 4096]);
                }
            }
            ResponseOutparam::set(out, Ok(response));
        }
        _ => respond(out, 404, "text/plain", b"no such misbehaviour\n"),
    }
}

/// `GET` of config `upstream` (`http://host:port/path`): its status and body.
fn fetch() -> Result<(u16, Vec<u8>), String> {
    use wasi::http::outgoing_handler;
    use wasi::http::types::{OutgoingRequest, Scheme};
    let url = wasi::config::store::get("upstream")
        .map_err(|e| format!("{e:?}"))?
        .ok_or("config upstream is not set")?;
    let rest = url
        .strip_prefix("http://")
        .ok_or("upstream is not an http:// URL")?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let request = OutgoingRequest::new(Fields::new());
    let _ = request.set_scheme(Some(&Scheme::Http));
    let _ = request.set_authority(Some(authority));
    let _ = request.set_path_with_query(Some(if path.is_empty() { "/" } else { path }));
    let future = outgoing_handler::handle(request, None).map_err(|e| format!("{e:?}"))?;
    let response = loop {
        match future.get() {
            Some(result) => break result,
            None => future.subscribe().block(),
        }
    };
    let response = response
        .map_err(|()| "the response was taken twice".to_owned())?
        .map_err(|e| format!("{e:?}"))?;
    let status = response.status();
    let incoming = response.consume().map_err(|()| "no body")?;
    let mut body = Vec::new();
    {
        let stream = incoming.stream().map_err(|()| "no body stream")?;
        while let Ok(chunk) = stream.blocking_read(64 * 1024) {
            body.extend_from_slice(&chunk);
        }
    }
    Ok((status, body))
}

fn read_body(request: &IncomingRequest) -> Vec<u8> {
    let mut bytes = Vec::new();
    let Ok(body) = request.consume() else {
        return bytes;
    };
    {
        let Ok(stream) = body.stream() else {
            return bytes;
        };
        while let Ok(chunk) = stream.blocking_read(64 * 1024) {
            bytes.extend_from_slice(&chunk);
        }
    }
    bytes
}

fn respond(out: ResponseOutparam, status: u16, content_type: &str, body: &[u8]) {
    let headers = Fields::new();
    let _ = headers.set("content-type", &[content_type.as_bytes().to_vec()]);
    let response = OutgoingResponse::new(headers);
    let _ = response.set_status_code(status);
    let Ok(outgoing) = response.body() else {
        return;
    };
    ResponseOutparam::set(out, Ok(response));
    {
        let Ok(stream) = outgoing.write() else {
            return;
        };
        for chunk in body.chunks(4096) {
            if stream.blocking_write_and_flush(chunk).is_err() {
                return;
            }
        }
    }
    let _ = OutgoingBody::finish(outgoing, None);
}

export!(Items);
