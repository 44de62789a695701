"""enrich-order in Python: the ERP publishes `SalesOrderCreated` with its own field names
and amounts in the order's currency; the CRM wants `crm.order.created` with its field
names, amounts in EUR and the customer's master data. The same transform as the Rust
`enrich-order` beside this directory, built with componentize-py (see README.md).

How the WIT world `weir:function/handler` looks from Python (module `wit_world`, generated
by componentize-py): the export `handle` is the method `WitWorld.handle(self, event)`;
returning a list is `ok`, raising `Err(Error_Fatal(msg))` or `Err(Error_Retryable(msg))`
is `err`. An import whose WIT result is an error raises `Err(error)`.
"""

import json
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, List, Optional

import wit_world
from componentize_py_types import Err
from wit_world.imports import wasi_config_store, wasi_keyvalue_store
from wit_world.imports.weir_function_types import (
    Error_Fatal,
    Error_Retryable,
    Event,
    Output,
)

SOURCE = "weir://functions/enrich-order"


def fatal(message: str) -> Err:
    return Err(Error_Fatal(message))


def retryable(message: str) -> Err:
    return Err(Error_Retryable(message))


def config(key: str) -> Optional[str]:
    try:
        return wasi_config_store.get(key)
    except Err as e:
        raise fatal(f'cannot read config key "{key}": {e.value}')


def require_number(key: str) -> float:
    raw = config(key)
    if raw is None:
        raise fatal(
            f'config key "{key}" is not set; add it under the function\'s config in weir.toml'
        )
    try:
        value = float(raw.strip())
    except ValueError:
        raise fatal(f'config key "{key}" is "{raw}", not a number')
    if value != value or value in (float("inf"), float("-inf")):
        raise fatal(f'config key "{key}" is "{raw}", not a number')
    return value


def round_half_away(x: float) -> float:
    """Rounds half away from zero, as Rust's `f64::round` does (Python's `round` rounds
    half to even)."""
    return float(Decimal(x).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def field(obj: Any, name: str, kind: type, event_id: str) -> Any:
    value = obj.get(name) if isinstance(obj, dict) else None
    # bool is an int in Python, but not a number in JSON.
    ok = isinstance(value, kind) and not isinstance(value, bool)
    if kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok:
        wanted = "number" if kind is float else "string"
        raise fatal(f"event {event_id} data is not the expected JSON: {name} must be a {wanted}")
    return value


def customer(customer_id: str) -> Any:
    """The customer's master data from the `customers` bucket, or None if it has none."""
    try:
        with wasi_keyvalue_store.open("customers") as bucket:
            value = bucket.get(customer_id)
    except Err as e:
        raise retryable(
            f"cannot read customer {customer_id} from the customers bucket: {e.value}"
        )
    if value is None:
        return None
    try:
        return json.loads(value)
    except ValueError as e:
        raise fatal(f"customer {customer_id} in the customers bucket is not JSON: {e}")


class WitWorld(wit_world.WitWorld):
    def handle(self, event: Event) -> List[Output]:
        if event.type != "SalesOrderCreated":
            # Not ours: nothing to publish.
            return []
        if event.data is None:
            raise fatal(f"event {event.id} has no data")
        try:
            order = json.loads(event.data)
        except ValueError as e:
            raise fatal(f"event {event.id} data is not the expected JSON: {e}")
        if not isinstance(order, dict):
            raise fatal(f"event {event.id} data is not the expected JSON: not an object")
        order_id = field(order, "SalesOrderNumber", str, event.id)
        customer_id = field(order, "SoldToParty", str, event.id)
        net_amount = field(order, "NetAmount", float, event.id)
        currency = field(order, "TransactionCurrency", str, event.id)
        order_date = field(order, "CreationDate", str, event.id)
        items = order.get("Items") or []
        if not isinstance(items, list):
            raise fatal(f"event {event.id} data is not the expected JSON: Items must be a list")

        configured = config("currency")
        target_currency = "EUR" if configured is None else configured
        rate = 1.0 if currency == target_currency else require_number(f"rate.{currency}")

        def convert(amount: float) -> float:
            return round_half_away(amount * rate * 100) / 100

        crm = {
            "orderId": order_id,
            "customerId": customer_id,
            "orderDate": order_date,
            "amount": convert(net_amount),
            "currency": target_currency,
            "originalAmount": net_amount,
            "originalCurrency": currency,
            "customer": customer(customer_id),
            "lines": [
                {
                    "sku": field(item, "Material", str, event.id),
                    "quantity": field(item, "OrderQuantity", float, event.id),
                    "amount": convert(field(item, "NetAmount", float, event.id)),
                }
                for item in items
            ],
        }

        out = Event(
            id="",
            source=SOURCE,
            type="crm.order.created",
            subject=event.subject,
            time=event.time,
            datacontenttype="application/json",
            dataschema=None,
            # Keep the partition key so the CRM side stays ordered per customer.
            extensions=[(n, v) for (n, v) in event.extensions if n == "partitionkey"],
            data=json.dumps(crm, separators=(",", ":")).encode(),
        )
        return [Output(target="crm.orders", event=out)]
