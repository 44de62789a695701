// {{name}}: a weir function. weir calls `handle` once per event of the pipeline's `from`
// topics; each returned output is published to its target topic, which must be one of
// the pipeline's `to`.
//
// The WIT world weir:function/handler (wit/function.wit) from JavaScript: an event is an
// object { id, source, type, subject, time, datacontenttype, dataschema, extensions, data }
// (optional fields are undefined, `data` is a Uint8Array, `extensions` a list of
// [name, { tag: "string" | "integer" | "boolean", val }]). Return a list of
// { target, event }; throw { tag: "fatal", val: message } for an event that can never
// succeed, { tag: "retryable", val: message } for one that may succeed later.
//
// Imports are ES modules named after their WIT interface, e.g.
//   import { get } from "wasi:config/store@0.2.0-rc.1";
//   import { log } from "wasi:logging/logging@0.1.0-draft";

export function handle(event) {
  // Forward every event unchanged to the topic `out`.
  return [{ target: "out", event }];
}
