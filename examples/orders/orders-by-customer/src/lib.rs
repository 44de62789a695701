//! The example's view of the orders, projected from the events of `order-entity`: one row
//! per order with the columns `order_id` (the key, the event's `entityid`), `customer`,
//! `amount`, `currency`, `status` (`placed`, `paid`, `shipped`, `cancelled`) and
//! `version` (the `entityversion` of the order's last event). `OrderPlaced` sets every
//! column; `OrderPaid`, `OrderShipped` and `OrderCancelled` set the status and version
//! and leave the rest as they are. Other events change nothing.

use serde::Deserialize;
use weir_guest_projection::{Error, Event, Projection, Row, RowChange};

/// `OrderPlaced`'s data, as `order-entity` writes it.
#[derive(Deserialize)]
struct Placed {
    customer: String,
    amount: f64,
    currency: String,
}

struct OrdersByCustomer;

impl Projection for OrdersByCustomer {
    fn project(event: &Event) -> Result<Vec<RowChange>, Error> {
        let status = match event.type_.as_str() {
            "OrderPlaced" => "placed",
            "OrderPaid" => "paid",
            "OrderShipped" => "shipped",
            "OrderCancelled" => "cancelled",
            _ => return Ok(Vec::new()),
        };
        let mut row = Row::new()
            .text("order_id", event.entity_id()?)
            .text("status", status)
            .integer("version", event.entity_version()?);
        if status == "placed" {
            let placed: Placed = event.json()?;
            row = row
                .text("customer", placed.customer)
                .real("amount", placed.amount)
                .text("currency", placed.currency);
        }
        Ok(vec![RowChange::upsert(row)])
    }
}

weir_guest_projection::export_projection!(OrdersByCustomer);
