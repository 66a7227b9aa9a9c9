//! The read models folded in memory, for a rebuild from the start of the log.
//!
//! Applying a million events one SQL statement at a time is bound by round trips; folding
//! them in memory and writing each table once with `COPY` (several tables at once) is
//! bound by Postgres's bulk write speed instead. The fold here
//! must give exactly what [`crate::read_model::apply`] gives event by event: the rebuild
//! test compares both, table by table.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;
use sqlx::PgPool;
use tillstream_events::{
    EventMetadata, OrderEvent, OrderStatus, UserEvent, UserStatus, order, user,
};
use uuid::Uuid;

use crate::read_model::{ApplyError, HistoryRow, ItemRow, PROJECTION};

/// Rows per `COPY` message.
const CHUNK: usize = 10_000;

/// One stream message decoded for folding. Decoding is most of a rebuild's CPU, so it is
/// done apart from the fold (on other threads, in order).
pub struct Decoded {
    head: Head,
    typed: Result<Typed, ApplyError>,
}

/// Everything of an event but its typed payload.
struct Head {
    aggregate_type: String,
    aggregate_id: String,
    sequence: u64,
    event_type: String,
    occurred_at: DateTime<Utc>,
    metadata: EventMetadata,
    /// The payload as it came, for `order_history.payload`.
    payload: String,
}

enum Typed {
    User(UserEvent),
    Order(OrderEvent),
}

/// The envelope with its payload left undecoded. It requires the same fields as
/// [`tillstream_events::EventEnvelope`], so a message the projector could not read fails here too.
#[derive(Deserialize)]
#[allow(dead_code)]
struct RawEnvelope<'a> {
    event_id: Uuid,
    aggregate_type: String,
    aggregate_id: String,
    sequence: u64,
    position: i64,
    event_type: String,
    event_version: String,
    occurred_at: DateTime<Utc>,
    #[serde(borrow)]
    payload: &'a RawValue,
    metadata: EventMetadata,
}

/// Decodes a stream message (a [`tillstream_events::EventEnvelope`]) and its payload.
pub fn decode(message: &[u8]) -> Result<Decoded, ApplyError> {
    let raw: RawEnvelope = serde_json::from_slice(message)?;
    let tagged = || format!("{{\"{}\":{}}}", raw.event_type, raw.payload.get());
    let typed = match raw.aggregate_type.as_str() {
        user::AGGREGATE_TYPE => serde_json::from_str(&tagged())
            .map(Typed::User)
            .map_err(ApplyError::from),
        order::AGGREGATE_TYPE => serde_json::from_str(&tagged())
            .map(Typed::Order)
            .map_err(ApplyError::from),
        other => Err(ApplyError::UnknownAggregate(other.to_owned())),
    };
    Ok(Decoded {
        head: Head {
            payload: raw.payload.get().to_owned(),
            aggregate_type: raw.aggregate_type,
            aggregate_id: raw.aggregate_id,
            sequence: raw.sequence,
            event_type: raw.event_type,
            occurred_at: raw.occurred_at,
            metadata: raw.metadata,
        },
        typed,
    })
}

/// What folding one event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Folded {
    Applied,
    Duplicate,
    /// An earlier event of the aggregate is missing from the log.
    Gap {
        expected: u64,
    },
}

struct UserRow {
    email: String,
    username: String,
    full_name: String,
    role: String,
    status: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    version: i64,
    order_count: i64,
    total_spent_cents: i64,
}

struct OrderRow {
    user_id: Uuid,
    status: &'static str,
    total_cents: i64,
    currency: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    version: i64,
    refund_due_cents: i64,
}

#[derive(Default)]
struct StatsRow {
    placed: i64,
    paid: i64,
    delivered: i64,
    cancelled: i64,
    spent_cents: i64,
    refunds_cents: i64,
    last_order_at: Option<DateTime<Utc>>,
}

/// Every read-model table, in memory.
#[derive(Default)]
pub struct Image {
    users: HashMap<Uuid, UserRow>,
    orders: HashMap<Uuid, OrderRow>,
    items: Vec<ItemRow>,
    history: Vec<HistoryRow>,
    stats: HashMap<Uuid, StatsRow>,
    checkpoints: HashMap<(String, String), i64>,
}

fn uuid(raw: &str) -> Result<Uuid, ApplyError> {
    Uuid::parse_str(raw).map_err(|_| ApplyError::BadId(raw.to_owned()))
}

impl Image {
    /// Folds one event in, with the projector's exactly-once rule on the aggregate's
    /// sequence. An error leaves the image as it was.
    pub fn fold(&mut self, event: Decoded) -> Result<Folded, ApplyError> {
        let Decoded { head: event, typed } = event;
        let key = (event.aggregate_type.clone(), event.aggregate_id.clone());
        let current = self.checkpoints.get(&key).copied().unwrap_or(0);
        let sequence = event.sequence as i64;
        if sequence <= current {
            return Ok(Folded::Duplicate);
        }
        if sequence != current + 1 {
            return Ok(Folded::Gap {
                expected: current as u64 + 1,
            });
        }
        match typed? {
            Typed::User(payload) => self.fold_user(&event, payload)?,
            Typed::Order(payload) => self.fold_order(event, payload)?,
        }
        self.checkpoints.insert(key, sequence);
        Ok(Folded::Applied)
    }

    fn fold_user(&mut self, event: &Head, payload: UserEvent) -> Result<(), ApplyError> {
        let id = uuid(&event.aggregate_id)?;
        let version = event.sequence as i64;
        if let UserEvent::UserRegistered(e) = payload {
            if self.users.contains_key(&id) {
                return Err(ApplyError::Database(sqlx::Error::Protocol(format!(
                    "user {id} registered twice"
                ))));
            }
            self.users.insert(
                id,
                UserRow {
                    email: e.email,
                    username: e.username,
                    full_name: e.full_name,
                    role: e.role.as_str().to_owned(),
                    status: UserStatus::Active.as_str().to_owned(),
                    created_at: event.occurred_at,
                    updated_at: event.occurred_at,
                    version,
                    order_count: 0,
                    total_spent_cents: 0,
                },
            );
            return Ok(());
        }
        // Like the SQL UPDATEs: no row, no change.
        let Some(row) = self.users.get_mut(&id) else {
            return Ok(());
        };
        match payload {
            UserEvent::UserRegistered(_) => {}
            UserEvent::UserProfileUpdated(e) => row.full_name = e.full_name,
            UserEvent::UserRoleChanged(e) => row.role = e.to.as_str().to_owned(),
            UserEvent::UserDeactivated(_) => {
                row.status = UserStatus::Deactivated.as_str().to_owned()
            }
        }
        row.updated_at = event.occurred_at;
        row.version = version;
        Ok(())
    }

    fn fold_order(&mut self, event: Head, payload: OrderEvent) -> Result<(), ApplyError> {
        let id = uuid(&event.aggregate_id)?;
        let version = event.sequence as i64;
        let user_id = match &payload {
            OrderEvent::OrderPlaced(e) => {
                if self.orders.contains_key(&id) {
                    return Err(ApplyError::Database(sqlx::Error::Protocol(format!(
                        "order {id} placed twice"
                    ))));
                }
                uuid(&e.user_id)?
            }
            _ => match self.orders.get(&id) {
                Some(order) => order.user_id,
                // The SQL path fails here too (`SELECT user_id FROM orders` finds no row).
                None => return Err(ApplyError::Database(sqlx::Error::RowNotFound)),
            },
        };
        let occurred_at = event.occurred_at;
        self.history.push(HistoryRow {
            order_id: id,
            sequence: version,
            event_type: event.event_type,
            actor_id: event.metadata.actor.id,
            actor_role: event.metadata.actor.role.map(|r| r.as_str()),
            correlation_id: event.metadata.correlation_id,
            occurred_at: event.occurred_at,
            payload: event.payload,
        });
        let mut stats = StatsRow::default();
        let status_change =
            |status: OrderStatus, refund: i64, orders: &mut HashMap<Uuid, OrderRow>| {
                if let Some(order) = orders.get_mut(&id) {
                    order.status = status.as_str();
                    order.refund_due_cents = refund;
                    order.updated_at = occurred_at;
                    order.version = version;
                }
            };
        match payload {
            OrderEvent::OrderPlaced(e) => {
                self.items.extend(ItemRow::of_order(id, e.items));
                self.orders.insert(
                    id,
                    OrderRow {
                        user_id,
                        status: OrderStatus::Placed.as_str(),
                        total_cents: e.total_cents,
                        currency: e.currency,
                        created_at: occurred_at,
                        updated_at: occurred_at,
                        version,
                        refund_due_cents: 0,
                    },
                );
                stats.placed = 1;
                stats.last_order_at = Some(occurred_at);
            }
            OrderEvent::OrderPaid(e) => {
                status_change(OrderStatus::Paid, 0, &mut self.orders);
                stats.paid = 1;
                stats.spent_cents = e.amount_cents;
            }
            OrderEvent::OrderShipped(_) => {
                status_change(OrderStatus::Shipped, 0, &mut self.orders);
                return Ok(());
            }
            OrderEvent::OrderDelivered(_) => {
                status_change(OrderStatus::Delivered, 0, &mut self.orders);
                stats.delivered = 1;
            }
            OrderEvent::OrderCancelled(e) => {
                status_change(OrderStatus::Cancelled, e.refund_due_cents, &mut self.orders);
                stats.cancelled = 1;
                stats.spent_cents = -e.refund_due_cents;
                stats.refunds_cents = e.refund_due_cents;
            }
        }
        if let Some(user) = self.users.get_mut(&user_id) {
            user.order_count += stats.placed;
            user.total_spent_cents += stats.spent_cents;
        }
        let row = self.stats.entry(user_id).or_default();
        row.placed += stats.placed;
        row.paid += stats.paid;
        row.delivered += stats.delivered;
        row.cancelled += stats.cancelled;
        row.spent_cents += stats.spent_cents;
        row.refunds_cents += stats.refunds_cents;
        row.last_order_at = row.last_order_at.max(stats.last_order_at);
        Ok(())
    }

    /// Rows the image will write, for progress reporting.
    pub fn rows(&self) -> usize {
        self.users.len()
            + self.orders.len()
            + self.items.len()
            + self.history.len()
            + self.stats.len()
            + self.checkpoints.len()
    }

    /// Writes every table into `schema` (the shadow) with `COPY`, several tables at once on
    /// separate connections. `written` is told how many rows each chunk wrote.
    pub async fn write(
        self,
        pool: &PgPool,
        schema: &str,
        written: &(dyn Fn(u64) + Sync),
    ) -> Result<(), sqlx::Error> {
        let Image {
            users,
            orders,
            items,
            history,
            stats,
            checkpoints,
        } = self;
        let users = async {
            copy(pool, schema, "users (id, email, username, full_name, role, status, created_at, updated_at, version, order_count, total_spent_cents)", users.iter(), written, |row, (id, u)| {
                row.uuid(id).text(&u.email).text(&u.username).text(&u.full_name).text(&u.role).text(&u.status)
                    .time(u.created_at).time(u.updated_at).int(u.version).int(u.order_count).int(u.total_spent_cents);
            }).await?;
            copy(pool, schema, "user_order_stats (user_id, orders_placed, orders_paid, orders_delivered, orders_cancelled, total_spent_cents, refunds_due_cents, last_order_at)", stats.iter(), written, |row, (id, s)| {
                row.uuid(id).int(s.placed).int(s.paid).int(s.delivered).int(s.cancelled).int(s.spent_cents).int(s.refunds_cents).opt_time(s.last_order_at);
            }).await
        };
        let orders = async {
            copy(pool, schema, "orders (id, user_id, status, total_cents, currency, created_at, updated_at, version, refund_due_cents)", orders.iter(), written, |row, (id, o)| {
                row.uuid(id).uuid(&o.user_id).text(o.status).int(o.total_cents).text(&o.currency)
                    .time(o.created_at).time(o.updated_at).int(o.version).int(o.refund_due_cents);
            }).await?;
            copy(
                pool,
                schema,
                "projection_checkpoints (projection, aggregate_type, aggregate_id, sequence)",
                checkpoints.iter(),
                written,
                |row, ((t, id), seq)| {
                    row.text(PROJECTION).text(t).text(id).int(*seq);
                },
            )
            .await?;
            copy(pool, schema, "order_items (order_id, line_no, sku, name, quantity, unit_price_cents, line_total_cents)", items.iter(), written, |row, i| {
                row.uuid(&i.order_id).int(i64::from(i.line_no)).text(&i.sku).text(&i.name).int(i64::from(i.quantity))
                    .int(i.unit_price_cents).int(i.line_total_cents);
            }).await
        };
        let history = copy(
            pool,
            schema,
            "order_history (order_id, sequence, event_type, actor_id, actor_role, correlation_id, occurred_at, payload)",
            history.iter(),
            written,
            |row, h| {
                row.uuid(&h.order_id)
                    .int(h.sequence)
                    .text(&h.event_type)
                    .opt_text(h.actor_id.as_deref())
                    .opt_text(h.actor_role)
                    .text(&h.correlation_id)
                    .time(h.occurred_at)
                    .text(&h.payload);
            },
        );
        futures::try_join!(users, orders, history)?;
        Ok(())
    }
}

/// Sends `rows` to `COPY <schema>.<table> FROM STDIN` in text format, in chunks.
async fn copy<T>(
    pool: &PgPool,
    schema: &str,
    table: &str,
    rows: impl Iterator<Item = T>,
    written: &(dyn Fn(u64) + Sync),
    encode: impl Fn(&mut CopyRow, T),
) -> Result<(), sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let mut copy = conn
        .copy_in_raw(&format!("COPY {schema}.{table} FROM STDIN"))
        .await?;
    let mut row = CopyRow::default();
    let mut in_chunk = 0u64;
    for item in rows {
        encode(&mut row, item);
        row.end();
        in_chunk += 1;
        if in_chunk as usize == CHUNK {
            copy.send(std::mem::take(&mut row.buffer).into_bytes())
                .await?;
            written(in_chunk);
            in_chunk = 0;
        }
    }
    if in_chunk > 0 {
        copy.send(row.buffer.into_bytes()).await?;
        written(in_chunk);
    }
    copy.finish().await?;
    Ok(())
}

/// Rows in `COPY`'s text format: tab-separated, `\N` for NULL, backslash escapes.
#[derive(Default)]
struct CopyRow {
    buffer: String,
    fields: usize,
}

impl CopyRow {
    fn field(&mut self) -> &mut String {
        if self.fields > 0 {
            self.buffer.push('\t');
        }
        self.fields += 1;
        &mut self.buffer
    }

    fn text(&mut self, value: &str) -> &mut Self {
        let buffer = self.field();
        for c in value.chars() {
            match c {
                '\\' => buffer.push_str("\\\\"),
                '\n' => buffer.push_str("\\n"),
                '\r' => buffer.push_str("\\r"),
                '\t' => buffer.push_str("\\t"),
                c => buffer.push(c),
            }
        }
        self
    }

    fn opt_text(&mut self, value: Option<&str>) -> &mut Self {
        match value {
            Some(value) => self.text(value),
            None => {
                self.field().push_str("\\N");
                self
            }
        }
    }

    fn int(&mut self, value: i64) -> &mut Self {
        use std::fmt::Write;
        let _ = write!(self.field(), "{value}");
        self
    }

    fn uuid(&mut self, value: &Uuid) -> &mut Self {
        let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let text = value.hyphenated().encode_lower(&mut text);
        self.field().push_str(text);
        self
    }

    /// Microseconds, truncated, as Postgres stores them (and as sqlx binds them).
    fn time(&mut self, value: DateTime<Utc>) -> &mut Self {
        use std::fmt::Write;
        let _ = write!(self.field(), "{}", value.format("%Y-%m-%d %H:%M:%S%.6f+00"));
        self
    }

    fn opt_time(&mut self, value: Option<DateTime<Utc>>) -> &mut Self {
        match value {
            Some(value) => self.time(value),
            None => {
                self.field().push_str("\\N");
                self
            }
        }
    }

    fn end(&mut self) {
        self.buffer.push('\n');
        self.fields = 0;
    }
}
