//! The example's view of the orders: one row per order with the columns `order_id` (the
//! key), `customer`, `amount`, `currency`, `status` (`placed`, `paid`, `shipped`,
//! `cancelled`) and `version`. Two sources feed it:
//! - the events of `order-entity` (the journal `entity.order`): `OrderPlaced` sets every
//!   column, with `order_id` from the event's `entityid` and `version` its
//!   `entityversion`; `OrderPaid`, `OrderShipped` and `OrderCancelled` set the status and
//!   version and leave the rest as they are;
//! - the CRM's `crm.order.created` events on `crm.orders` (the ERP's orders, enriched by
//!   `enrich-order`): a placed order in EUR, without a version (it is no entity's).
//!
//! Other events change nothing.
use serde::Deserialize;
use weir_guest_projection::{Error, Event, Projection, Row, RowChange};

/// `OrderPlaced`'s data, as `order-entity` writes it.
#[derive(Deserialize)]
struct Placed {
    customer: String,
    amount: f64,
    currency: String,
}

/// `crm.order.created`'s data, as `enrich-order` writes it (the fields used here).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CrmOrder {
    order_id: String,
    customer_id: String,
    amount: f64,
    currency: String,
}

struct OrdersByCustomer;

impl Projection for OrdersByCustomer {
    fn project(event: &Event) -> Result<Vec<RowChange>, Error> {
        if event.type_ == "crm.order.created" {
            let order: CrmOrder = event.json()?;
            return Ok(vec![RowChange::upsert(
                Row::new()
                    .text("order_id", order.order_id)
                    .text("customer", order.customer_id)
                    .real("amount", order.amount)
                    .text("currency", order.currency)
                    .text("status", "placed"),
            )]);
        }
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
