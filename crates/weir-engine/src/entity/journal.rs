//! How an entity's events and snapshots are made, stored and read back.
//!
//! A journal event is a CloudEvent with the id `TYPE/ID/VERSION`, the source
//! `/entities/TYPE`, the entity id as `subject` (unless the entity set one), the
//! `entitytype`, `entityid` and `entityversion` extensions, and JSON data; it is stored
//! under the entity id as key. A snapshot is a CloudEvent of type `weir.entity.snapshot`
//! in the snapshot topic, under the entity id, with the same extensions (the version it
//! covers) and the state as data (none for a deleted entity).

use weir_cloudevents::{CloudEvent, Data, ExtensionValue, Json};
use weir_log::Record;
use weir_wasm::{CallError, InstancePool, NewEvent};

use super::{Shared, writer::Entry};
use crate::codec::{LoggedEvent, decode_event};
use crate::{Error, Result};

/// The longest entity id, in bytes.
pub(crate) const MAX_ID_BYTES: usize = 256;

/// The type of snapshot events.
pub(crate) const SNAPSHOT_TYPE: &str = "weir.entity.snapshot";

/// An entity id is 1 to 256 bytes of printable characters without `/` (it is part of
/// its events' ids) or whitespace.
pub(crate) fn check_entity_id(ty: &str, id: &str) -> Result<()> {
    let reason = if id.is_empty() {
        "is empty"
    } else if id.len() > MAX_ID_BYTES {
        "is longer than 256 bytes"
    } else if id
        .chars()
        .any(|c| c == '/' || c.is_whitespace() || c.is_control())
    {
        "has a '/', whitespace or a control character"
    } else {
        return Ok(());
    };
    Err(Error::InvalidEntityId {
        ty: ty.to_owned(),
        id: id.chars().take(64).collect(),
        reason: reason.to_owned(),
    })
}

/// A command name is what a function name may be: 1 to 63 of a-z, 0-9 and '-'.
pub(crate) fn check_command_name(name: &str) -> Result<()> {
    match weir_manifest::name_fault(name) {
        None => Ok(()),
        Some(reason) => Err(Error::InvalidCommand {
            name: name.chars().take(64).collect(),
            reason: reason.to_owned(),
        }),
    }
}

fn extensions(event: &mut CloudEvent, ty: &str, id: &str, version: u64) {
    let ext = &mut event.extensions;
    ext.insert("entitytype".into(), ExtensionValue::String(ty.to_owned()));
    ext.insert("entityid".into(), ExtensionValue::String(id.to_owned()));
    ext.insert(
        "entityversion".into(),
        ExtensionValue::Integer(version as i64),
    );
}

/// The journal event for event `version` of entity `id`, accepted by its function.
pub(crate) fn journal_event(
    ty: &str,
    id: &str,
    version: u64,
    new: NewEvent,
    time: &str,
) -> std::result::Result<CloudEvent, String> {
    let mut event = CloudEvent::new(
        format!("{ty}/{id}/{version}"),
        format!("/entities/{ty}"),
        new.ty,
    );
    event.subject = Some(new.subject.unwrap_or_else(|| id.to_owned()));
    event.time = Some(time.to_owned());
    if let Some(data) = new.data {
        let json = Json::from_vec(data).map_err(|e| format!("its data is not JSON: {e}"))?;
        event.datacontenttype = Some("application/json".to_owned());
        event.data = Some(Data::Json(json));
    }
    extensions(&mut event, ty, id, version);
    event.validate().map_err(|e| e.to_string())?;
    Ok(event)
}

/// The record of a journal or snapshot event: keyed by the entity id, stamped with the
/// time its round appends it.
pub(crate) fn record(id: &str, event: &CloudEvent, timestamp_ms: i64) -> Record {
    Record::new(event.to_json_vec())
        .with_key(id.as_bytes().to_vec())
        .with_timestamp(timestamp_ms)
}

/// The snapshot of entity `id` at `version`, whose event is at journal offset `covers`
/// (the `entityoffset` extension, a string: offsets outgrow CloudEvents integers).
pub(crate) fn snapshot_event(
    ty: &str,
    id: &str,
    version: u64,
    covers: u64,
    state: Option<&[u8]>,
    time: &str,
) -> CloudEvent {
    let mut event = CloudEvent::new(
        format!("{ty}/{id}/{version}/snapshot"),
        format!("/entities/{ty}"),
        SNAPSHOT_TYPE,
    );
    event.subject = Some(id.to_owned());
    event.time = Some(time.to_owned());
    if let Some(state) = state {
        match Json::from_slice(state) {
            Ok(json) => {
                event.datacontenttype = Some("application/json".to_owned());
                event.data = Some(Data::Json(json));
            }
            // A state that is not JSON is kept as bytes.
            Err(_) => {
                event.datacontenttype = Some("application/octet-stream".to_owned());
                event.data = Some(Data::Binary(state.to_vec().into()));
            }
        }
    }
    extensions(&mut event, ty, id, version);
    event.extensions.insert(
        "entityoffset".into(),
        ExtensionValue::String(covers.to_string()),
    );
    event
}

/// A snapshot read back: the version it covers, the journal offset of that version's
/// event, and the state.
pub(crate) fn read_snapshot(event: &CloudEvent) -> Option<(u64, u64, Option<Vec<u8>>)> {
    let version = match event.extensions.get("entityversion")? {
        ExtensionValue::Integer(v) if *v >= 0 => *v as u64,
        _ => return None,
    };
    let covers = match event.extensions.get("entityoffset")? {
        ExtensionValue::String(offset) => offset.parse().ok()?,
        _ => return None,
    };
    let state = event.data.as_ref().map(|data| match data {
        Data::Json(json) => json.as_bytes().to_vec(),
        Data::Text(text) => text.as_bytes().to_vec(),
        Data::Binary(bytes) => bytes.to_vec(),
    });
    Some((version, covers, state))
}

/// The journal events at `entries` (one entity's, in order) in `partition`.
pub(crate) async fn read_events(
    shared: &Shared,
    partition: u32,
    entries: &[Entry],
) -> Result<Vec<LoggedEvent>> {
    let mut events = Vec::with_capacity(entries.len());
    for entry in entries {
        let mut records = shared
            .log
            .read(&shared.spec.journal, partition, entry.offset, 1)
            .await?;
        let record = match records.pop() {
            Some(r) if r.offset == entry.offset => r,
            _ => {
                return Err(Error::CorruptEvent {
                    topic: shared.spec.journal.clone(),
                    partition,
                    offset: entry.offset,
                    reason: "an entity's event is no longer in its journal (was the journal compacted or given a retention?)".to_owned(),
                });
            }
        };
        events.push(decode_event(&shared.spec.journal, record)?);
    }
    Ok(events)
}

/// Fold `event` into `state` with the entity's `apply`. Blocking.
pub(crate) fn apply(
    shared: &Shared,
    pool: &InstancePool,
    state: Option<&[u8]>,
    event: &CloudEvent,
) -> Result<Option<Vec<u8>>> {
    pool.apply(state, event)
        .map_err(|error| function_failed(shared, "apply", &event.id, error))
}

/// The error of an entity function's call.
pub(crate) fn function_failed(shared: &Shared, export: &str, on: &str, error: CallError) -> Error {
    Error::EntityFunction {
        ty: shared.ty.clone(),
        export: export.to_owned(),
        on: on.to_owned(),
        retryable: error.is_retryable(),
        reason: error.to_string(),
    }
}
