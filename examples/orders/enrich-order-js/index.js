// enrich-order in JavaScript: the ERP publishes `SalesOrderCreated` with its own field
// names and amounts in the order's currency; the CRM wants `crm.order.created` with its
// field names, amounts in EUR and the customer's master data. The same transform as the
// Rust `enrich-order` beside this directory, built with componentize-js (`npm run build`).
//
// How the WIT world `weir:function/handler` looks from JavaScript:
// - the export `handle` is the exported function `handle(event)`; returning a list is
//   `ok`, throwing `{ tag: "retryable" | "fatal", val: message }` is `err`;
// - records are objects with camelCase fields, `option<T>` is the value or `undefined`,
//   `list<u8>` is a `Uint8Array`, variants are `{ tag, val }`, `s64` is a `BigInt`;
// - an import whose WIT result is an error throws it (the error variant is the thrown
//   value's `payload`).

import { get as configGet } from "wasi:config/store@0.2.0-rc.1";
import { open as openBucket } from "wasi:keyvalue/store@0.2.0-draft";

const SOURCE = "weir://functions/enrich-order";

const fatal = (message) => ({ tag: "fatal", val: message });
const retryable = (message) => ({ tag: "retryable", val: message });

/** The message of an error thrown by an import (its WIT error is in `payload`). */
function describe(e) {
  const p = e && e.payload !== undefined ? e.payload : e;
  if (p && typeof p === "object" && "tag" in p) {
    return p.val === undefined ? p.tag : `${p.tag}: ${p.val}`;
  }
  return String(p && p.message ? p.message : p);
}

function config(key) {
  try {
    return configGet(key);
  } catch (e) {
    throw fatal(`cannot read config key "${key}": ${describe(e)}`);
  }
}

function requireNumber(key) {
  const raw = config(key);
  if (raw === undefined || raw === null) {
    throw fatal(`config key "${key}" is not set; add it under the function's config in weir.toml`);
  }
  const value = raw.trim() === "" ? NaN : Number(raw.trim());
  if (!Number.isFinite(value)) {
    throw fatal(`config key "${key}" is "${raw}", not a number`);
  }
  return value;
}

/** Rounds half away from zero, as Rust's `f64::round` does. */
function round(x) {
  return Math.sign(x) * Math.round(Math.abs(x));
}

function field(object, name, type, id) {
  const value = object[name];
  if (typeof value !== type) {
    throw fatal(`event ${id} data is not the expected JSON: ${name} must be a ${type}`);
  }
  return value;
}

/** The customer's master data from the `customers` bucket, or null if it has none. */
function customer(id) {
  let value;
  try {
    value = openBucket("customers").get(id);
  } catch (e) {
    throw retryable(`cannot read customer ${id} from the customers bucket: ${describe(e)}`);
  }
  if (value === undefined || value === null) {
    return null;
  }
  try {
    return JSON.parse(new TextDecoder().decode(value));
  } catch (e) {
    throw fatal(`customer ${id} in the customers bucket is not JSON: ${e.message}`);
  }
}

export function handle(event) {
  if (event.type !== "SalesOrderCreated") {
    // Not ours: nothing to publish.
    return [];
  }
  if (event.data === undefined || event.data === null) {
    throw fatal(`event ${event.id} has no data`);
  }
  let order;
  try {
    order = JSON.parse(new TextDecoder().decode(event.data));
  } catch (e) {
    throw fatal(`event ${event.id} data is not the expected JSON: ${e.message}`);
  }
  if (order === null || typeof order !== "object") {
    throw fatal(`event ${event.id} data is not the expected JSON: not an object`);
  }
  const orderId = field(order, "SalesOrderNumber", "string", event.id);
  const customerId = field(order, "SoldToParty", "string", event.id);
  const netAmount = field(order, "NetAmount", "number", event.id);
  const currency = field(order, "TransactionCurrency", "string", event.id);
  const orderDate = field(order, "CreationDate", "string", event.id);
  const items = order.Items ?? [];
  if (!Array.isArray(items)) {
    throw fatal(`event ${event.id} data is not the expected JSON: Items must be a list`);
  }

  const targetCurrency = config("currency") ?? "EUR";
  const rate = currency === targetCurrency ? 1 : requireNumber(`rate.${currency}`);
  const convert = (amount) => round(amount * rate * 100) / 100;

  const crm = {
    orderId,
    customerId,
    orderDate,
    amount: convert(netAmount),
    currency: targetCurrency,
    originalAmount: netAmount,
    originalCurrency: currency,
    customer: customer(customerId),
    lines: items.map((item) => ({
      sku: field(item, "Material", "string", event.id),
      quantity: field(item, "OrderQuantity", "number", event.id),
      amount: convert(field(item, "NetAmount", "number", event.id)),
    })),
  };

  // Keep the partition key so the CRM side stays ordered per customer.
  const extensions = event.extensions.filter(([name]) => name === "partitionkey");
  return [
    {
      target: "crm.orders",
      event: {
        id: "",
        source: SOURCE,
        type: "crm.order.created",
        subject: event.subject,
        time: event.time,
        datacontenttype: "application/json",
        dataschema: undefined,
        extensions,
        data: new TextEncoder().encode(JSON.stringify(crm)),
      },
    },
  ];
}
