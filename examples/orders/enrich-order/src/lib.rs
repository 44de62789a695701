//! `enrich-order`: the ERP publishes `SalesOrderCreated` with its own field names and
//! amounts in the order's currency; the CRM wants `crm.order.created` with its field
//! names, amounts in EUR and the customer's master data. The exchange rate comes from the
//! function's config, the customer record from the `customers` key-value namespace.

mod transform;

use weir_guest::{Error, Event, Function, Output};

struct EnrichOrder;

impl Function for EnrichOrder {
    fn handle(event: Event) -> Result<Vec<Output>, Error> {
        transform::enrich(event)
    }
}

weir_guest::export_function!(EnrichOrder);
