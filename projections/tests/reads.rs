//! The read-model queries on a real Postgres: the plans Postgres keeps for them.

use tillstream_projections::queries::Reads;
use tillstream_runtime::postgres;
use tillstream_testkit::TestEnv;
use uuid::Uuid;

/// Orders of `user` with one line each, `count` of them, through plain SQL.
async fn seed_orders(pool: &sqlx::PgPool, user: Uuid, count: i64) {
    sqlx::query(
        "INSERT INTO orders (id, user_id, status, total_cents, currency, created_at, updated_at, version) \
         SELECT gen_random_uuid(), $1, 'PAID', 300, 'EUR', now(), now(), 2 FROM generate_series(1, $2)",
    )
    .bind(user)
    .bind(count)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO order_items (order_id, line_no, sku, name, quantity, unit_price_cents, line_total_cents) \
         SELECT id, 1, 'SKU', 'thing', 1, 300, 300 FROM orders WHERE user_id = $1",
    )
    .bind(user)
    .execute(pool)
    .await
    .unwrap();
}

/// How many orders of `customer` the first page (up to 20) holds.
async fn first_page(reads: &Reads, customer: Uuid) -> usize {
    reads
        .orders(Some(customer), None, None, 20)
        .await
        .unwrap()
        .len()
}

/// The plan the reading session keeps for its prepared statement whose text contains
/// `fragment`, run with `arguments` (SQL literals), and how many generic plans it used.
async fn kept_plan(pool: &sqlx::PgPool, fragment: &str, arguments: &str) -> (String, i64) {
    let mut conn = pool.acquire().await.unwrap();
    let (name, generic): (String, i64) = sqlx::query_as(
        "SELECT name, generic_plans FROM pg_prepared_statements WHERE strpos(statement, $1) > 0",
    )
    .bind(fragment)
    .fetch_one(&mut *conn)
    .await
    .unwrap_or_else(|e| panic!("no prepared statement with {fragment:?}: {e}"));
    let lines: Vec<String> = sqlx::query_scalar(&format!("EXPLAIN EXECUTE {name}({arguments})"))
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    (lines.join("\n"), generic)
}

/// Statements prepared while the tables were tiny (and analyzed so) get generic plans
/// that still use the indexes once the tables have grown: planning them once instead of
/// at every execution is safe (docs/performance.md, Fix 20).
#[tokio::test]
async fn plans_kept_from_tiny_tables_still_use_the_indexes_once_the_tables_have_grown() {
    let env = TestEnv::new();
    let url = env.database_url("reads");
    drop(Reads::connect(&url, 1).await.unwrap());
    let admin = env.connect("reads");
    let customer = Uuid::now_v7();
    seed_orders(&admin, customer, 3).await;
    seed_orders(&admin, Uuid::now_v7(), 2).await;
    sqlx::query("ANALYZE orders, order_items, users")
        .execute(&admin)
        .await
        .unwrap();

    // One connection, so every read below goes through the same prepared statements.
    let pool = postgres::pool_for_indexed_reads(&url, 1).unwrap();
    let reads = Reads::new(pool.clone());
    let some_order: Uuid = sqlx::query_scalar("SELECT id FROM orders LIMIT 1")
        .fetch_one(&admin)
        .await
        .unwrap();
    for _ in 0..8 {
        assert!(reads.order(some_order).await.unwrap().is_some());
        assert_eq!(first_page(&reads, customer).await, 3);
        reads
            .orders(None, Some("PAID"), Some(Uuid::max()), 20)
            .await
            .unwrap();
        reads.orders(None, Some("PAID"), None, 20).await.unwrap();
        reads.users(Some(Uuid::max()), 20).await.unwrap();
    }

    for _ in 0..10 {
        seed_orders(&admin, Uuid::now_v7(), 2_000).await;
    }
    let id = format!("'{some_order}'");
    let user = format!("'{customer}'");
    let max = format!("'{}'", Uuid::max());
    // Each kept plan must find its rows through the index named, by an index condition.
    for (fragment, arguments, index) in [
        (
            "FROM orders WHERE id = $1",
            id.clone(),
            "Index Scan using orders_pkey on orders",
        ),
        (
            "FROM orders WHERE id = $1",
            id,
            "Index Scan using order_items_pkey on order_items",
        ),
        (
            "FROM orders WHERE user_id = $1 ORDER BY",
            format!("{user}, 20"),
            "Index Scan using orders_by_user on orders",
        ),
        (
            "FROM orders WHERE status = $1 AND id < $2",
            format!("'PAID', {max}, 20"),
            "Index Scan using orders_by_status on orders",
        ),
        (
            "FROM orders WHERE status = $1 ORDER BY",
            "'PAID', 20".to_string(),
            "Index Scan using orders_by_status on orders",
        ),
        (
            "FROM users WHERE id < $1",
            format!("{max}, 20"),
            "Index Scan Backward using users_pkey on users",
        ),
    ] {
        let (plan, generic) = kept_plan(&pool, fragment, &arguments).await;
        assert!(generic > 0, "{fragment}: planned afresh every time\n{plan}");
        assert!(
            !plan.contains("Seq Scan"),
            "{fragment}: a table scan\n{plan}"
        );
        let used = plan
            .lines()
            .position(|line| line.contains(index))
            .unwrap_or_else(|| panic!("{fragment}: not through {index}\n{plan}"));
        assert!(
            plan.lines()
                .nth(used + 1)
                .is_some_and(|line| line.contains("Index Cond")),
            "{fragment}: {index} without an index condition\n{plan}"
        );
    }
    assert_eq!(
        first_page(&reads, customer).await,
        3,
        "the customer's own orders, among 20 005"
    );
    env.cleanup().await;
}
