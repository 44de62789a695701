//! The transform itself, apart from its export (`lib.rs`), so that its source can also be
//! compiled natively: `weir bench wasm` calls it in-process to measure what running it as
//! wasm costs (`wasm_native_ratio`).

use serde::{Deserialize, Serialize};
use weir_guest::{Error, Event, Output, config, kv};

/// The ERP's order, as it publishes it.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SalesOrder {
    sales_order_number: String,
    sold_to_party: String,
    net_amount: f64,
    transaction_currency: String,
    creation_date: String,
    #[serde(default)]
    items: Vec<SalesOrderItem>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SalesOrderItem {
    material: String,
    order_quantity: f64,
    net_amount: f64,
}

/// The CRM's order, as it wants it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CrmOrder {
    order_id: String,
    customer_id: String,
    order_date: String,
    amount: f64,
    currency: String,
    original_amount: f64,
    original_currency: String,
    /// The customer's master data record, or null if there is none.
    customer: Option<serde_json::Value>,
    lines: Vec<CrmOrderLine>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CrmOrderLine {
    sku: String,
    quantity: f64,
    amount: f64,
}

/// `SalesOrderCreated` in, `crm.order.created` out; any other event type: nothing.
pub fn enrich(event: Event) -> Result<Vec<Output>, Error> {
    if event.type_ != "SalesOrderCreated" {
        // Not ours: nothing to publish.
        return Ok(Vec::new());
    }
    let order: SalesOrder = event.json()?;
    let target_currency = config::get("currency").unwrap_or_else(|| "EUR".to_owned());
    let rate = if order.transaction_currency == target_currency {
        1.0
    } else {
        config::require_f64(&format!("rate.{}", order.transaction_currency))?
    };
    let convert = |amount: f64| (amount * rate * 100.0).round() / 100.0;
    let customer = kv::open("customers")?.get_json(&order.sold_to_party)?;

    let crm = CrmOrder {
        order_id: order.sales_order_number,
        customer_id: order.sold_to_party,
        order_date: order.creation_date,
        amount: convert(order.net_amount),
        currency: target_currency,
        original_amount: order.net_amount,
        original_currency: order.transaction_currency,
        customer,
        lines: order
            .items
            .into_iter()
            .map(|item| CrmOrderLine {
                sku: item.material,
                quantity: item.order_quantity,
                amount: convert(item.net_amount),
            })
            .collect(),
    };

    let mut out = Event::new("weir://functions/enrich-order", "crm.order.created");
    out.subject = event.subject.clone();
    out.time = event.time.clone();
    // Keep the partition key so the CRM side stays ordered per customer.
    if let Some(key) = event.extension("partitionkey") {
        out.set_extension("partitionkey", key.clone());
    }
    out.set_json(&crm)?;
    Ok(vec![Output::to("crm.orders", out)])
}
