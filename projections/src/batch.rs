//! A batch of events applied with one statement per table, instead of several statements
//! per event: how the projector keeps up when events arrive faster than one round trip
//! per statement allows.
//!
//! The batch is folded in memory, in delivery order, against the checkpoints (and the
//! owners of the orders it changes) read in one statement. Then the checkpoints are
//! claimed and each read-model table is written with one multi-row (`unnest`) statement.
//! The result must be exactly what [`crate::read_model::apply`] gives event by event in
//! the same order, each event with the same [`ApplyOutcome`]: the projector tests compare
//! both paths table by table.
//!
//! What the fold cannot decide fails a whole statement: a constraint the database
//! enforces (an order placed twice, text Postgres refuses), or a checkpoint another
//! projector advanced since it was read ([`SetApplied::Contended`]). The caller then drops
//! the transaction and applies the batch again one event at a time, each under its own
//! savepoint, so such a failure stays the failing event's.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::{Postgres, Transaction};
use tillstream_events::{
    EventEnvelope, OrderEvent, OrderStatus, UserEvent, UserStatus, order, user,
};
use uuid::Uuid;

use crate::projector::ApplyOutcome;
use crate::read_model::{ApplyError, HistoryRow, ItemRow, PROJECTION, StatsChange, uuid};

/// What applying a batch with one statement per table gave. Nothing is committed.
pub(crate) enum SetApplied {
    /// Written into the transaction: each event's outcome, in batch order.
    Written(Vec<Result<ApplyOutcome, ApplyError>>),
    /// Another projector advanced one of the batch's checkpoints after it was read: the
    /// transaction holds part of the batch and must be rolled back.
    Contended,
}

/// An aggregate of the batch: where its checkpoint stood, where the batch takes it.
struct Aggregate {
    aggregate_type: String,
    aggregate_id: String,
    /// The checkpoint read before the batch (0: none yet).
    claimed_from: i64,
    /// The checkpoint after the events of the batch applied so far.
    checkpoint: i64,
    /// For an order: its customer, from the read model or an `OrderPlaced` of the batch.
    order_owner: Option<Uuid>,
}

/// Applies `events` (in delivery order) inside `tx`, one statement per table.
pub(crate) async fn apply(
    tx: &mut Transaction<'_, Postgres>,
    events: &[&EventEnvelope],
) -> Result<SetApplied, sqlx::Error> {
    let (mut aggregates, slot_of) = read_aggregates(tx, events).await?;
    let mut writes = Writes::default();
    let mut outcomes = Vec::with_capacity(events.len());
    for (event, &slot) in events.iter().zip(&slot_of) {
        let aggregate = &mut aggregates[slot];
        let sequence = event.sequence as i64;
        let outcome = if sequence <= aggregate.checkpoint {
            Ok(ApplyOutcome::Duplicate)
        } else if sequence != aggregate.checkpoint + 1 {
            Ok(ApplyOutcome::Gap {
                expected: aggregate.checkpoint as u64 + 1,
            })
        } else {
            writes.fold(event, &mut aggregate.order_owner).map(|()| {
                aggregate.checkpoint = sequence;
                ApplyOutcome::Applied
            })
        };
        outcomes.push(outcome);
    }
    if !claim(tx, &aggregates).await? {
        return Ok(SetApplied::Contended);
    }
    writes.write(tx).await?;
    let applied: Vec<(&str, &str, i64)> = aggregates
        .iter()
        .filter(|a| a.checkpoint > a.claimed_from)
        .map(|a| {
            (
                a.aggregate_type.as_str(),
                a.aggregate_id.as_str(),
                a.checkpoint,
            )
        })
        .collect();
    crate::applied::notify(tx, &applied).await?;
    Ok(SetApplied::Written(outcomes))
}

/// The batch's aggregates with their checkpoints and (orders) customers, in one statement;
/// and for each event, the index of its aggregate.
async fn read_aggregates(
    tx: &mut Transaction<'_, Postgres>,
    events: &[&EventEnvelope],
) -> Result<(Vec<Aggregate>, Vec<usize>), sqlx::Error> {
    let mut index: HashMap<(&str, &str), usize> = HashMap::new();
    let mut aggregates = Vec::new();
    let mut slot_of = Vec::with_capacity(events.len());
    for event in events {
        let key = (event.aggregate_type.as_str(), event.aggregate_id.as_str());
        let slot = *index.entry(key).or_insert_with(|| {
            aggregates.push(Aggregate {
                aggregate_type: event.aggregate_type.clone(),
                aggregate_id: event.aggregate_id.clone(),
                claimed_from: 0,
                checkpoint: 0,
                order_owner: None,
            });
            aggregates.len() - 1
        });
        slot_of.push(slot);
    }
    // Rows are locked in one order for every projector, so two of them cannot deadlock.
    let mut order: Vec<usize> = (0..aggregates.len()).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&aggregates[a], &aggregates[b]);
        (&a.aggregate_type, &a.aggregate_id).cmp(&(&b.aggregate_type, &b.aggregate_id))
    });
    let slots: Vec<i64> = order.iter().map(|&i| i as i64 + 1).collect();
    let types: Vec<&str> = order
        .iter()
        .map(|&i| aggregates[i].aggregate_type.as_str())
        .collect();
    let ids: Vec<&str> = order
        .iter()
        .map(|&i| aggregates[i].aggregate_id.as_str())
        .collect();
    let order_ids: Vec<Option<Uuid>> = order
        .iter()
        .map(|&i| {
            let a = &aggregates[i];
            (a.aggregate_type == order::AGGREGATE_TYPE)
                .then(|| Uuid::parse_str(&a.aggregate_id).ok())
                .flatten()
        })
        .collect();
    // Correlated subqueries, not joins: each is one primary-key lookup whatever the
    // planner believes about the tables' sizes (with no statistics it estimated 126 of
    // 40 k checkpoints and hashed or materialised all of them, every batch). The
    // checkpoints are locked until the commit, so the claim below finds them unchanged.
    let rows: Vec<(i64, Option<i64>, Option<Uuid>)> = sqlx::query_as(
        "SELECT k.n, \
             (SELECT c.sequence FROM projection_checkpoints c WHERE c.projection = $1 \
                 AND c.aggregate_type = k.aggregate_type AND c.aggregate_id = k.aggregate_id FOR UPDATE), \
             (SELECT o.user_id FROM orders o WHERE o.id = k.order_id) \
         FROM unnest($2::bigint[], $3::text[], $4::text[], $5::uuid[]) AS k (n, aggregate_type, aggregate_id, order_id)",
    )
    .bind(PROJECTION)
    .bind(&slots)
    .bind(&types)
    .bind(&ids)
    .bind(&order_ids)
    .fetch_all(&mut **tx)
    .await?;
    for (n, checkpoint, owner) in rows {
        let Some(aggregate) = usize::try_from(n - 1)
            .ok()
            .and_then(|i| aggregates.get_mut(i))
        else {
            continue;
        };
        aggregate.claimed_from = checkpoint.unwrap_or(0);
        aggregate.checkpoint = aggregate.claimed_from;
        aggregate.order_owner = owner;
    }
    Ok((aggregates, slot_of))
}

/// Moves every advanced checkpoint from where it was read to where the batch leaves it, in
/// one statement (each row found through the primary key, as the insert's conflict
/// check). The existing checkpoints were locked when read; one that did not exist then but
/// does now was created by another projector meanwhile: false, and nothing of this batch
/// may be committed.
async fn claim(
    tx: &mut Transaction<'_, Postgres>,
    aggregates: &[Aggregate],
) -> Result<bool, sqlx::Error> {
    let mut advanced: Vec<&Aggregate> = aggregates
        .iter()
        .filter(|a| a.checkpoint > a.claimed_from)
        .collect();
    if advanced.is_empty() {
        return Ok(true);
    }
    advanced.sort_by(|a, b| {
        (&a.aggregate_type, &a.aggregate_id).cmp(&(&b.aggregate_type, &b.aggregate_id))
    });
    let types: Vec<&str> = advanced.iter().map(|a| a.aggregate_type.as_str()).collect();
    let ids: Vec<&str> = advanced.iter().map(|a| a.aggregate_id.as_str()).collect();
    let to: Vec<i64> = advanced.iter().map(|a| a.checkpoint).collect();
    // `xmax = 0`: the row was inserted by this statement, not updated.
    let claimed: Vec<(String, String, bool)> = sqlx::query_as(
        "INSERT INTO projection_checkpoints AS c (projection, aggregate_type, aggregate_id, sequence) \
         SELECT $1, * FROM unnest($2::text[], $3::text[], $4::bigint[]) \
         ON CONFLICT (projection, aggregate_type, aggregate_id) DO UPDATE SET sequence = EXCLUDED.sequence \
         RETURNING c.aggregate_type, c.aggregate_id, (c.xmax = 0)",
    )
    .bind(PROJECTION)
    .bind(&types)
    .bind(&ids)
    .bind(&to)
    .fetch_all(&mut **tx)
    .await?;
    let created: HashMap<(&str, &str), bool> = claimed
        .iter()
        .map(|(t, i, created)| ((t.as_str(), i.as_str()), *created))
        .collect();
    Ok(claimed.len() == advanced.len()
        && advanced.iter().all(|a| {
            created.get(&(a.aggregate_type.as_str(), a.aggregate_id.as_str()))
                == Some(&(a.claimed_from == 0))
        }))
}

struct NewUser {
    id: Uuid,
    email: String,
    username: String,
    full_name: String,
    role: String,
    status: &'static str,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    version: i64,
    order_count: i64,
    total_spent_cents: i64,
}

/// What the batch changes on a user row it did not insert; `None` leaves a column as it is.
#[derive(Default)]
struct UserChange {
    full_name: Option<String>,
    role: Option<String>,
    status: Option<&'static str>,
    /// `updated_at` and `version`, when one of the user's own events changed the row.
    touched: Option<(DateTime<Utc>, i64)>,
    order_count: i64,
    total_spent_cents: i64,
}

struct NewOrder {
    id: Uuid,
    user_id: Uuid,
    status: &'static str,
    total_cents: i64,
    currency: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    version: i64,
    refund_due_cents: i64,
}

/// The last status change of an order the batch did not insert.
struct OrderChange {
    status: &'static str,
    refund_due_cents: i64,
    updated_at: DateTime<Utc>,
    version: i64,
}

#[derive(Default)]
struct StatsSum {
    change: StatsChange,
    last_order_at: Option<DateTime<Utc>>,
}

/// The batch's effect on each table, folded in delivery order.
#[derive(Default)]
struct Writes {
    new_users: Vec<NewUser>,
    new_user_at: HashMap<Uuid, usize>,
    user_changes: HashMap<Uuid, UserChange>,
    new_orders: Vec<NewOrder>,
    new_order_at: HashMap<Uuid, usize>,
    order_changes: HashMap<Uuid, OrderChange>,
    items: Vec<ItemRow>,
    history: Vec<HistoryRow>,
    stats: HashMap<Uuid, StatsSum>,
}

impl Writes {
    /// Folds in one event that is next for its aggregate. An error (checked in the order
    /// [`crate::read_model::apply`] meets it) leaves the writes as they were.
    fn fold(
        &mut self,
        event: &EventEnvelope,
        order_owner: &mut Option<Uuid>,
    ) -> Result<(), ApplyError> {
        match event.aggregate_type.as_str() {
            user::AGGREGATE_TYPE => {
                let payload: UserEvent = event.decode()?;
                let id = uuid(&event.aggregate_id)?;
                self.fold_user(event, id, payload);
                Ok(())
            }
            order::AGGREGATE_TYPE => {
                let payload: OrderEvent = event.decode()?;
                let id = uuid(&event.aggregate_id)?;
                self.fold_order(event, id, payload, order_owner)
            }
            other => Err(ApplyError::UnknownAggregate(other.to_owned())),
        }
    }

    fn fold_user(&mut self, event: &EventEnvelope, id: Uuid, payload: UserEvent) {
        let (at, version) = (event.occurred_at, event.sequence as i64);
        let (full_name, role, status) = match payload {
            UserEvent::UserRegistered(e) => {
                // Order figures that came before the row existed changed nothing, as an
                // UPDATE of no row changes nothing. (Had the row existed, the insert fails
                // and the batch is applied event by event.)
                self.user_changes.remove(&id);
                self.new_user_at.insert(id, self.new_users.len());
                self.new_users.push(NewUser {
                    id,
                    email: e.email,
                    username: e.username,
                    full_name: e.full_name,
                    role: e.role.as_str().to_owned(),
                    status: UserStatus::Active.as_str(),
                    created_at: at,
                    updated_at: at,
                    version,
                    order_count: 0,
                    total_spent_cents: 0,
                });
                return;
            }
            UserEvent::UserProfileUpdated(e) => (Some(e.full_name), None, None),
            UserEvent::UserRoleChanged(e) => (None, Some(e.to.as_str().to_owned()), None),
            UserEvent::UserDeactivated(_) => (None, None, Some(UserStatus::Deactivated)),
        };
        if let Some(&i) = self.new_user_at.get(&id) {
            let row = &mut self.new_users[i];
            if let Some(full_name) = full_name {
                row.full_name = full_name;
            }
            if let Some(role) = role {
                row.role = role;
            }
            if let Some(status) = status {
                row.status = status.as_str();
            }
            row.updated_at = at;
            row.version = version;
            return;
        }
        let change = self.user_changes.entry(id).or_default();
        if full_name.is_some() {
            change.full_name = full_name;
        }
        if role.is_some() {
            change.role = role;
        }
        if let Some(status) = status {
            change.status = Some(status.as_str());
        }
        change.touched = Some((at, version));
    }

    fn fold_order(
        &mut self,
        event: &EventEnvelope,
        id: Uuid,
        payload: OrderEvent,
        order_owner: &mut Option<Uuid>,
    ) -> Result<(), ApplyError> {
        let stats = StatsChange::of(&payload);
        let owner = match &payload {
            OrderEvent::OrderPlaced(e) => Some(uuid(&e.user_id)?),
            _ => *order_owner,
        };
        // Without an order row the event-by-event path fails looking up the customer.
        let customer = match owner {
            Some(customer) => customer,
            None if stats == StatsChange::default() => Uuid::nil(),
            None => return Err(ApplyError::Database(sqlx::Error::RowNotFound)),
        };
        let (at, version) = (event.occurred_at, event.sequence as i64);
        self.history.push(HistoryRow {
            order_id: id,
            sequence: version,
            event_type: event.event_type.clone(),
            actor_id: event.metadata.actor.id.clone(),
            actor_role: event.metadata.actor.role.map(|r| r.as_str()),
            correlation_id: event.metadata.correlation_id.clone(),
            occurred_at: at,
            payload: event.payload.to_string(),
        });
        let (status, refund_due_cents) = match payload {
            OrderEvent::OrderPlaced(e) => {
                *order_owner = owner;
                self.items.extend(ItemRow::of_order(id, e.items));
                self.new_order_at.insert(id, self.new_orders.len());
                self.new_orders.push(NewOrder {
                    id,
                    user_id: customer,
                    status: OrderStatus::Placed.as_str(),
                    total_cents: e.total_cents,
                    currency: e.currency,
                    created_at: at,
                    updated_at: at,
                    version,
                    refund_due_cents: 0,
                });
                (None, 0)
            }
            OrderEvent::OrderPaid(_) => (Some(OrderStatus::Paid), 0),
            OrderEvent::OrderShipped(_) => (Some(OrderStatus::Shipped), 0),
            OrderEvent::OrderDelivered(_) => (Some(OrderStatus::Delivered), 0),
            OrderEvent::OrderCancelled(e) => (Some(OrderStatus::Cancelled), e.refund_due_cents),
        };
        if let Some(status) = status {
            let status = status.as_str();
            match self.new_order_at.get(&id) {
                Some(&i) => {
                    let row = &mut self.new_orders[i];
                    row.status = status;
                    row.refund_due_cents = refund_due_cents;
                    row.updated_at = at;
                    row.version = version;
                }
                None => {
                    self.order_changes.insert(
                        id,
                        OrderChange {
                            status,
                            refund_due_cents,
                            updated_at: at,
                            version,
                        },
                    );
                }
            }
        }
        if stats != StatsChange::default() {
            match self.new_user_at.get(&customer) {
                Some(&i) => {
                    let row = &mut self.new_users[i];
                    row.order_count += stats.placed;
                    row.total_spent_cents += stats.spent_cents;
                }
                None => {
                    let change = self.user_changes.entry(customer).or_default();
                    change.order_count += stats.placed;
                    change.total_spent_cents += stats.spent_cents;
                }
            }
            let sum = self.stats.entry(customer).or_default();
            sum.change.placed += stats.placed;
            sum.change.paid += stats.paid;
            sum.change.delivered += stats.delivered;
            sum.change.cancelled += stats.cancelled;
            sum.change.spent_cents += stats.spent_cents;
            sum.change.refunds_cents += stats.refunds_cents;
            if stats.placed > 0 {
                sum.last_order_at = sum.last_order_at.max(Some(at));
            }
        }
        Ok(())
    }

    /// Writes what was folded: at most one statement per table, rows that other
    /// transactions may also lock in id order.
    async fn write(self, tx: &mut Transaction<'_, Postgres>) -> Result<(), sqlx::Error> {
        let Writes {
            new_users,
            user_changes,
            new_orders,
            order_changes,
            items,
            history,
            stats,
            ..
        } = self;
        if !new_users.is_empty() {
            sqlx::query(
                "INSERT INTO users (id, email, username, full_name, role, status, created_at, updated_at, version, \
                     order_count, total_spent_cents) \
                 SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
                     $7::timestamptz[], $8::timestamptz[], $9::bigint[], $10::bigint[], $11::bigint[])",
            )
            .bind(new_users.iter().map(|u| u.id).collect::<Vec<_>>())
            .bind(new_users.iter().map(|u| u.email.as_str()).collect::<Vec<_>>())
            .bind(new_users.iter().map(|u| u.username.as_str()).collect::<Vec<_>>())
            .bind(new_users.iter().map(|u| u.full_name.as_str()).collect::<Vec<_>>())
            .bind(new_users.iter().map(|u| u.role.as_str()).collect::<Vec<_>>())
            .bind(new_users.iter().map(|u| u.status).collect::<Vec<_>>())
            .bind(new_users.iter().map(|u| u.created_at).collect::<Vec<_>>())
            .bind(new_users.iter().map(|u| u.updated_at).collect::<Vec<_>>())
            .bind(new_users.iter().map(|u| u.version).collect::<Vec<_>>())
            .bind(new_users.iter().map(|u| u.order_count).collect::<Vec<_>>())
            .bind(new_users.iter().map(|u| u.total_spent_cents).collect::<Vec<_>>())
            .execute(&mut **tx)
            .await?;
        }
        if !user_changes.is_empty() {
            let mut changes: Vec<(Uuid, UserChange)> = user_changes.into_iter().collect();
            changes.sort_by_key(|(id, _)| *id);
            sqlx::query(
                "UPDATE users u SET full_name = COALESCE(c.full_name, u.full_name), role = COALESCE(c.role, u.role), \
                     status = COALESCE(c.status, u.status), updated_at = COALESCE(c.updated_at, u.updated_at), \
                     version = COALESCE(c.version, u.version), order_count = u.order_count + c.order_count, \
                     total_spent_cents = u.total_spent_cents + c.total_spent_cents \
                 FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::bigint[], \
                     $7::bigint[], $8::bigint[]) \
                     AS c (id, full_name, role, status, updated_at, version, order_count, total_spent_cents) \
                 WHERE u.id = c.id",
            )
            .bind(changes.iter().map(|(id, _)| *id).collect::<Vec<_>>())
            .bind(changes.iter().map(|(_, c)| c.full_name.as_deref()).collect::<Vec<_>>())
            .bind(changes.iter().map(|(_, c)| c.role.as_deref()).collect::<Vec<_>>())
            .bind(changes.iter().map(|(_, c)| c.status).collect::<Vec<_>>())
            .bind(changes.iter().map(|(_, c)| c.touched.map(|t| t.0)).collect::<Vec<_>>())
            .bind(changes.iter().map(|(_, c)| c.touched.map(|t| t.1)).collect::<Vec<_>>())
            .bind(changes.iter().map(|(_, c)| c.order_count).collect::<Vec<_>>())
            .bind(changes.iter().map(|(_, c)| c.total_spent_cents).collect::<Vec<_>>())
            .execute(&mut **tx)
            .await?;
        }
        if !new_orders.is_empty() {
            sqlx::query(
                "INSERT INTO orders (id, user_id, status, total_cents, currency, created_at, updated_at, version, refund_due_cents) \
                 SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::bigint[], $5::text[], $6::timestamptz[], \
                     $7::timestamptz[], $8::bigint[], $9::bigint[])",
            )
            .bind(new_orders.iter().map(|o| o.id).collect::<Vec<_>>())
            .bind(new_orders.iter().map(|o| o.user_id).collect::<Vec<_>>())
            .bind(new_orders.iter().map(|o| o.status).collect::<Vec<_>>())
            .bind(new_orders.iter().map(|o| o.total_cents).collect::<Vec<_>>())
            .bind(new_orders.iter().map(|o| o.currency.as_str()).collect::<Vec<_>>())
            .bind(new_orders.iter().map(|o| o.created_at).collect::<Vec<_>>())
            .bind(new_orders.iter().map(|o| o.updated_at).collect::<Vec<_>>())
            .bind(new_orders.iter().map(|o| o.version).collect::<Vec<_>>())
            .bind(new_orders.iter().map(|o| o.refund_due_cents).collect::<Vec<_>>())
            .execute(&mut **tx)
            .await?;
        }
        if !order_changes.is_empty() {
            let mut changes: Vec<(Uuid, OrderChange)> = order_changes.into_iter().collect();
            changes.sort_by_key(|(id, _)| *id);
            sqlx::query(
                "UPDATE orders o SET status = c.status, refund_due_cents = c.refund_due_cents, \
                     updated_at = c.updated_at, version = c.version \
                 FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::timestamptz[], $5::bigint[]) \
                     AS c (id, status, refund_due_cents, updated_at, version) \
                 WHERE o.id = c.id",
            )
            .bind(changes.iter().map(|(id, _)| *id).collect::<Vec<_>>())
            .bind(changes.iter().map(|(_, c)| c.status).collect::<Vec<_>>())
            .bind(changes.iter().map(|(_, c)| c.refund_due_cents).collect::<Vec<_>>())
            .bind(changes.iter().map(|(_, c)| c.updated_at).collect::<Vec<_>>())
            .bind(changes.iter().map(|(_, c)| c.version).collect::<Vec<_>>())
            .execute(&mut **tx)
            .await?;
        }
        if !items.is_empty() {
            sqlx::query(
                "INSERT INTO order_items (order_id, line_no, sku, name, quantity, unit_price_cents, line_total_cents) \
                 SELECT * FROM unnest($1::uuid[], $2::int[], $3::text[], $4::text[], $5::int[], $6::bigint[], $7::bigint[])",
            )
            .bind(items.iter().map(|i| i.order_id).collect::<Vec<_>>())
            .bind(items.iter().map(|i| i.line_no).collect::<Vec<_>>())
            .bind(items.iter().map(|i| i.sku.as_str()).collect::<Vec<_>>())
            .bind(items.iter().map(|i| i.name.as_str()).collect::<Vec<_>>())
            .bind(items.iter().map(|i| i.quantity).collect::<Vec<_>>())
            .bind(items.iter().map(|i| i.unit_price_cents).collect::<Vec<_>>())
            .bind(items.iter().map(|i| i.line_total_cents).collect::<Vec<_>>())
            .execute(&mut **tx)
            .await?;
        }
        if !history.is_empty() {
            sqlx::query(
                "INSERT INTO order_history (order_id, sequence, event_type, actor_id, actor_role, correlation_id, occurred_at, payload) \
                 SELECT order_id, sequence, event_type, actor_id, actor_role, correlation_id, occurred_at, payload::jsonb \
                 FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::timestamptz[], $8::text[]) \
                     AS h (order_id, sequence, event_type, actor_id, actor_role, correlation_id, occurred_at, payload)",
            )
            .bind(history.iter().map(|h| h.order_id).collect::<Vec<_>>())
            .bind(history.iter().map(|h| h.sequence).collect::<Vec<_>>())
            .bind(history.iter().map(|h| h.event_type.as_str()).collect::<Vec<_>>())
            .bind(history.iter().map(|h| h.actor_id.as_deref()).collect::<Vec<_>>())
            .bind(history.iter().map(|h| h.actor_role).collect::<Vec<_>>())
            .bind(history.iter().map(|h| h.correlation_id.as_str()).collect::<Vec<_>>())
            .bind(history.iter().map(|h| h.occurred_at).collect::<Vec<_>>())
            .bind(history.iter().map(|h| h.payload.as_str()).collect::<Vec<_>>())
            .execute(&mut **tx)
            .await?;
        }
        if !stats.is_empty() {
            let mut sums: Vec<(Uuid, StatsSum)> = stats.into_iter().collect();
            sums.sort_by_key(|(id, _)| *id);
            sqlx::query(
                "INSERT INTO user_order_stats AS s (user_id, orders_placed, orders_paid, orders_delivered, orders_cancelled, \
                     total_spent_cents, refunds_due_cents, last_order_at) \
                 SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[], \
                     $7::bigint[], $8::timestamptz[]) \
                 ON CONFLICT (user_id) DO UPDATE SET \
                     orders_placed = s.orders_placed + EXCLUDED.orders_placed, \
                     orders_paid = s.orders_paid + EXCLUDED.orders_paid, \
                     orders_delivered = s.orders_delivered + EXCLUDED.orders_delivered, \
                     orders_cancelled = s.orders_cancelled + EXCLUDED.orders_cancelled, \
                     total_spent_cents = s.total_spent_cents + EXCLUDED.total_spent_cents, \
                     refunds_due_cents = s.refunds_due_cents + EXCLUDED.refunds_due_cents, \
                     last_order_at = GREATEST(s.last_order_at, EXCLUDED.last_order_at)",
            )
            .bind(sums.iter().map(|(id, _)| *id).collect::<Vec<_>>())
            .bind(sums.iter().map(|(_, s)| s.change.placed).collect::<Vec<_>>())
            .bind(sums.iter().map(|(_, s)| s.change.paid).collect::<Vec<_>>())
            .bind(sums.iter().map(|(_, s)| s.change.delivered).collect::<Vec<_>>())
            .bind(sums.iter().map(|(_, s)| s.change.cancelled).collect::<Vec<_>>())
            .bind(sums.iter().map(|(_, s)| s.change.spent_cents).collect::<Vec<_>>())
            .bind(sums.iter().map(|(_, s)| s.change.refunds_cents).collect::<Vec<_>>())
            .bind(sums.iter().map(|(_, s)| s.last_order_at).collect::<Vec<_>>())
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }
}
