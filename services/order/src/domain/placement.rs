//! Validation and pricing of a new order: every problem is reported at once, with the
//! path of the field (`items[2].quantity`), and money is summed with overflow checks.

use tillstream_events::{Address, OrderLine};

pub const MAX_ITEMS: usize = 100;
pub const MAX_QUANTITY: u32 = 10_000;
/// The largest order total: 2^53 − 1 minor units, the largest integer every JSON client
/// (JavaScript's numbers included) holds exactly, so no reader of an order misreads it.
pub const MAX_TOTAL_CENTS: i64 = (1 << 53) - 1;
const MAX_SKU_CHARS: usize = 64;
const MAX_NAME_CHARS: usize = 200;
const MAX_NOTE_CHARS: usize = 1000;

/// One item as a client sends it.
#[derive(Debug, Clone)]
pub struct ItemInput<'a> {
    pub sku: &'a str,
    pub name: &'a str,
    pub quantity: u32,
    pub unit_price_cents: i64,
}

/// An order as a client sends it.
#[derive(Debug, Clone)]
pub struct PlacementInput<'a> {
    pub user_id: &'a str,
    pub items: Vec<ItemInput<'a>>,
    pub currency: &'a str,
    pub shipping_address: Option<Address>,
    pub note: &'a str,
}

/// A valid, priced order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub user_id: String,
    pub items: Vec<OrderLine>,
    pub currency: String,
    pub total_cents: i64,
    pub shipping_address: Option<Address>,
    pub note: String,
}

fn bounded_text(value: &str, max: usize) -> Result<String, String> {
    let value = value.trim();
    if value.is_empty() {
        Err("must not be empty".to_owned())
    } else if value.chars().count() > max {
        Err(format!("must be at most {max} characters"))
    } else if value.chars().any(char::is_control) {
        Err("must not contain control characters".to_owned())
    } else {
        Ok(value.to_owned())
    }
}

impl Placement {
    /// Parses and prices `input`, or returns `(field, problem)` for every invalid field.
    pub fn parse(input: &PlacementInput<'_>) -> Result<Self, Vec<(String, String)>> {
        let mut problems: Vec<(String, String)> = Vec::new();
        let user_id = match uuid::Uuid::parse_str(input.user_id) {
            Ok(id) => id.to_string(),
            Err(_) => {
                problems.push(("user_id".into(), "must be a UUID".into()));
                String::new()
            }
        };
        let currency = input.currency.trim().to_owned();
        if currency.len() != 3 || !currency.chars().all(|c| c.is_ascii_uppercase()) {
            problems.push((
                "currency".into(),
                "must be an ISO 4217 code such as EUR".into(),
            ));
        }
        if input.items.is_empty() || input.items.len() > MAX_ITEMS {
            problems.push(("items".into(), format!("must hold 1 to {MAX_ITEMS} items")));
        }
        let mut items = Vec::with_capacity(input.items.len().min(MAX_ITEMS));
        let mut total: Option<i64> = Some(0);
        for (index, item) in input.items.iter().enumerate().take(MAX_ITEMS) {
            let field = |name: &str| format!("items[{index}].{name}");
            let sku =
                bounded_text(item.sku, MAX_SKU_CHARS).map_err(|p| problems.push((field("sku"), p)));
            let name = bounded_text(item.name, MAX_NAME_CHARS)
                .map_err(|p| problems.push((field("name"), p)));
            if item.quantity == 0 || item.quantity > MAX_QUANTITY {
                problems.push((field("quantity"), format!("must be 1 to {MAX_QUANTITY}")));
            }
            if item.unit_price_cents < 0 {
                problems.push((field("unit_price_cents"), "must not be negative".into()));
            }
            let line_total = item.unit_price_cents.checked_mul(i64::from(item.quantity));
            if line_total.is_none() {
                problems.push((field("unit_price_cents"), "line total overflows".into()));
            }
            total = total.zip(line_total).and_then(|(t, l)| t.checked_add(l));
            if let (Ok(sku), Ok(name), Some(line_total_cents)) = (sku, name, line_total) {
                items.push(OrderLine {
                    sku,
                    name,
                    quantity: item.quantity,
                    unit_price_cents: item.unit_price_cents,
                    line_total_cents,
                });
            }
        }
        if total.is_none() && !problems.iter().any(|(_, p)| p.contains("overflows")) {
            problems.push(("items".into(), "order total overflows".into()));
        }
        if total.is_some_and(|t| t > MAX_TOTAL_CENTS) {
            problems.push((
                "items".into(),
                format!("order total must be at most {MAX_TOTAL_CENTS} cents"),
            ));
        }
        if input.note.chars().count() > MAX_NOTE_CHARS {
            problems.push((
                "note".into(),
                format!("must be at most {MAX_NOTE_CHARS} characters"),
            ));
        }
        if let Some(address) = &input.shipping_address
            && (address.country.len() != 2
                || !address.country.chars().all(|c| c.is_ascii_uppercase()))
        {
            problems.push((
                "shipping_address.country".into(),
                "must be an ISO 3166-1 alpha-2 code".into(),
            ));
        }
        match (problems.is_empty(), total) {
            (true, Some(total_cents)) => Ok(Placement {
                user_id,
                items,
                currency,
                total_cents,
                shipping_address: input.shipping_address.clone(),
                note: input.note.trim().to_owned(),
            }),
            _ => Err(problems),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const USER: &str = "0190a3c4-0000-7000-8000-000000000001";

    fn item(sku: &'static str, quantity: u32, price: i64) -> ItemInput<'static> {
        ItemInput {
            sku,
            name: "Thing",
            quantity,
            unit_price_cents: price,
        }
    }

    fn input(items: Vec<ItemInput<'static>>) -> PlacementInput<'static> {
        PlacementInput {
            user_id: USER,
            items,
            currency: "EUR",
            shipping_address: None,
            note: "",
        }
    }

    #[test]
    fn totals_are_summed_in_cents() {
        let p = Placement::parse(&input(vec![item("A", 2, 1999), item("B", 1, 500)])).unwrap();
        assert_eq!(p.total_cents, 4498);
        assert_eq!(p.items[0].line_total_cents, 3998);
    }

    #[test]
    fn empty_orders_are_refused() {
        let problems = Placement::parse(&input(vec![])).unwrap_err();
        assert_eq!(problems[0].0, "items");
    }

    #[test]
    fn each_bad_item_field_is_named() {
        let problems =
            Placement::parse(&input(vec![item("A", 1, 100), item("", 0, -1)])).unwrap_err();
        let fields: Vec<_> = problems.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "items[1].sku",
                "items[1].quantity",
                "items[1].unit_price_cents"
            ]
        );
    }

    #[test]
    fn overflowing_totals_are_refused_not_wrapped() {
        let problems = Placement::parse(&input(vec![item("A", 10_000, i64::MAX / 2)])).unwrap_err();
        assert!(problems.iter().any(|(_, p)| p.contains("overflows")));
        let problems =
            Placement::parse(&input(vec![item("A", 1, i64::MAX), item("B", 1, 1)])).unwrap_err();
        assert_eq!(
            problems,
            vec![("items".to_owned(), "order total overflows".to_owned())]
        );
        let problems =
            Placement::parse(&input(vec![item("A", 1, MAX_TOTAL_CENTS + 1)])).unwrap_err();
        assert_eq!(problems[0].0, "items");
        assert!(Placement::parse(&input(vec![item("A", 1, MAX_TOTAL_CENTS)])).is_ok());
    }

    #[test]
    fn currency_and_user_are_checked() {
        let mut bad = input(vec![item("A", 1, 1)]);
        bad.currency = "eur";
        bad.user_id = "nope";
        let fields: Vec<_> = Placement::parse(&bad)
            .unwrap_err()
            .into_iter()
            .map(|(f, _)| f)
            .collect();
        assert_eq!(fields, vec!["user_id", "currency"]);
    }
}
