//! The example's event-sourced order. Commands: `place` (customer, amount, currency),
//! `pay` (amount), `ship`, `cancel` (reason). Events: `OrderPlaced`, `OrderPaid`,
//! `OrderShipped`, `OrderCancelled`. An order is placed once, paid in full before it
//! ships, and cannot be cancelled once shipped.

use serde::{Deserialize, Serialize};
use weir_guest_entity::{Command, Decision, Entity, Error, Event, NewEvent};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    Placed,
    Paid,
    Shipped,
    Cancelled,
}

#[derive(Debug, Serialize, Deserialize)]
struct Order {
    status: Status,
    customer: String,
    amount: f64,
    currency: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cancel_reason: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Place {
    customer: String,
    amount: f64,
    currency: String,
}

#[derive(Serialize, Deserialize)]
struct Pay {
    amount: f64,
}

#[derive(Serialize, Deserialize)]
struct Cancel {
    #[serde(default)]
    reason: String,
}

fn event<T: Serialize>(ty: &str, data: &T) -> Result<Decision, Error> {
    Ok(Decision::accept([NewEvent::json(ty, data)?]))
}

impl Entity for Order {
    type State = Order;

    fn handle(state: Option<&Order>, command: &Command) -> Result<Decision, Error> {
        match (command.name.as_str(), state) {
            ("place", None) => {
                let place: Place = command.json()?;
                if place.customer.is_empty() {
                    return Ok(Decision::reject("an order needs a customer"));
                }
                if !(place.amount > 0.0) {
                    return Ok(Decision::reject("an order's amount must be above 0"));
                }
                event("OrderPlaced", &place)
            }
            ("place", Some(_)) => Ok(Decision::reject("the order is already placed")),
            (_, None) => Ok(Decision::reject("no such order; place it first")),
            ("pay", Some(order)) => {
                let pay: Pay = command.json()?;
                if order.status != Status::Placed {
                    return Ok(Decision::reject(format!(
                        "the order is {:?}, only a placed order can be paid",
                        order.status
                    )));
                }
                if (pay.amount - order.amount).abs() > 0.005 {
                    return Ok(Decision::reject(format!(
                        "the order is for {} {}, not {}",
                        order.amount, order.currency, pay.amount
                    )));
                }
                event("OrderPaid", &pay)
            }
            ("ship", Some(order)) => match order.status {
                Status::Paid => event("OrderShipped", &serde_json::json!({})),
                other => Ok(Decision::reject(format!(
                    "the order is {other:?}, only a paid order ships"
                ))),
            },
            ("cancel", Some(order)) => match order.status {
                Status::Placed | Status::Paid => {
                    let cancel: Cancel = if command.data.is_empty() {
                        Cancel {
                            reason: String::new(),
                        }
                    } else {
                        command.json()?
                    };
                    event("OrderCancelled", &cancel)
                }
                other => Ok(Decision::reject(format!(
                    "the order is {other:?} and can no longer be cancelled"
                ))),
            },
            (other, Some(_)) => Ok(Decision::reject(format!(
                "unknown command {other:?}; an order takes place, pay, ship and cancel"
            ))),
        }
    }

    fn apply(state: Option<Order>, event: &Event) -> Result<Option<Order>, Error> {
        let unexpected = || Error::Fatal(format!("{} does not apply here", event.type_));
        Ok(Some(match (event.type_.as_str(), state) {
            ("OrderPlaced", None) => {
                let place: Place = event.json()?;
                Order {
                    status: Status::Placed,
                    customer: place.customer,
                    amount: place.amount,
                    currency: place.currency,
                    cancel_reason: None,
                }
            }
            ("OrderPaid", Some(order)) => Order {
                status: Status::Paid,
                ..order
            },
            ("OrderShipped", Some(order)) => Order {
                status: Status::Shipped,
                ..order
            },
            ("OrderCancelled", Some(order)) => {
                let cancel: Cancel = event.json()?;
                Order {
                    status: Status::Cancelled,
                    cancel_reason: Some(cancel.reason),
                    ..order
                }
            }
            _ => return Err(unexpected()),
        }))
    }
}

weir_guest_entity::export_entity!(Order);
