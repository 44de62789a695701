// The example's event-sourced order in JavaScript: the same entity as the Rust
// `order-entity` beside this directory (same commands, events, state and rejections),
// built with componentize-js (`npm run build`). Commands: `place` (customer, amount,
// currency), `pay` (amount), `ship`, `cancel` (reason). Events: `OrderPlaced`,
// `OrderPaid`, `OrderShipped`, `OrderCancelled`. An order is placed once, paid in full
// before it ships, and cannot be cancelled once shipped.
//
// How the WIT world `weir:function/entity` looks from JavaScript:
// - the exports are the functions `handle(state, command)` and `apply(state, event)`;
// - the state is JSON text in a `Uint8Array` (this file's convention, as the Rust SDK's),
//   or `undefined` for an order without events; `apply` returns the new state the same
//   way (`undefined` deletes the entity);
// - `handle` returns `{ tag: "accept", val: [events] }` or `{ tag: "reject", val: reason }`;
//   an event is `{ type, data, subject }` with `data` as JSON bytes, `subject` optional;
// - throwing `{ tag: "fatal", val: message }` (or "retryable") is the WIT error.
// `apply` must be deterministic: weir calls it again on the same events to rebuild a state.

const encoder = new TextEncoder();
const decoder = new TextDecoder();

const fatal = (message) => ({ tag: "fatal", val: message });
const accept = (type, data) => ({
  tag: "accept",
  val: [{ type, data: encoder.encode(JSON.stringify(data)), subject: undefined }],
});
const reject = (reason) => ({ tag: "reject", val: reason });

/** Rust's `{:?}` of the order's status, so rejections read the same in both languages. */
const STATUS_NAMES = { placed: "Placed", paid: "Paid", shipped: "Shipped", cancelled: "Cancelled" };

/** JSON bytes parsed into an object; `what` names them in the error. */
function parse(bytes, what) {
  let value;
  try {
    value = JSON.parse(decoder.decode(bytes));
  } catch (e) {
    throw fatal(`${what} is not the expected JSON: ${e.message}`);
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw fatal(`${what} is not the expected JSON: not an object`);
  }
  return value;
}

/** `object[name]` if it is of `type`; a missing or mistyped field is a fatal error. */
function field(object, name, type, what) {
  const value = object[name];
  if (typeof value !== type) {
    throw fatal(`${what} is not the expected JSON: ${name} must be a ${type}`);
  }
  return value;
}

function placeData(object, what) {
  return {
    customer: field(object, "customer", "string", what),
    amount: field(object, "amount", "number", what),
    currency: field(object, "currency", "string", what),
  };
}

function cancelData(object, what) {
  return { reason: object.reason === undefined ? "" : field(object, "reason", "string", what) };
}

export function handle(stateBytes, command) {
  const order = stateBytes === undefined ? undefined : parse(stateBytes, "the stored state");
  const what = `command ${command.name} data`;
  const data = () => parse(command.data, what);
  const name = command.name;

  if (name === "place") {
    if (order !== undefined) return reject("the order is already placed");
    const place = placeData(data(), what);
    if (place.customer === "") return reject("an order needs a customer");
    if (!(place.amount > 0)) return reject("an order's amount must be above 0");
    return accept("OrderPlaced", place);
  }
  if (order === undefined) return reject("no such order; place it first");
  const status = STATUS_NAMES[order.status];

  switch (name) {
    case "pay": {
      const amount = field(data(), "amount", "number", what);
      if (order.status !== "placed") {
        return reject(`the order is ${status}, only a placed order can be paid`);
      }
      if (Math.abs(amount - order.amount) > 0.005) {
        return reject(`the order is for ${order.amount} ${order.currency}, not ${amount}`);
      }
      return accept("OrderPaid", { amount });
    }
    case "ship":
      if (order.status !== "paid") return reject(`the order is ${status}, only a paid order ships`);
      return accept("OrderShipped", {});
    case "cancel": {
      if (order.status !== "placed" && order.status !== "paid") {
        return reject(`the order is ${status} and can no longer be cancelled`);
      }
      const cancel = command.data.length === 0 ? { reason: "" } : cancelData(data(), what);
      return accept("OrderCancelled", cancel);
    }
    default:
      return reject(
        `unknown command ${JSON.stringify(name)}; an order takes place, pay, ship and cancel`,
      );
  }
}

export function apply(stateBytes, event) {
  const order = stateBytes === undefined ? undefined : parse(stateBytes, "the stored state");
  const what = `event ${event.id} data`;
  const data = () => {
    if (event.data === undefined) throw fatal(`event ${event.id} has no data`);
    return parse(event.data, what);
  };
  let next;
  if (event.type === "OrderPlaced" && order === undefined) {
    next = { status: "placed", ...placeData(data(), what) };
  } else if (event.type === "OrderPaid" && order !== undefined) {
    next = { ...order, status: "paid" };
  } else if (event.type === "OrderShipped" && order !== undefined) {
    next = { ...order, status: "shipped" };
  } else if (event.type === "OrderCancelled" && order !== undefined) {
    next = { ...order, status: "cancelled", cancel_reason: cancelData(data(), what).reason };
  } else {
    throw fatal(`${event.type} does not apply here`);
  }
  return encoder.encode(JSON.stringify(next));
}
