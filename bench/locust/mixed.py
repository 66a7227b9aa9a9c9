"""Locust file for tillstream's mixed shop scenario, for comparison with the origin's
Locust figures (1000 users, 180 ms average, 950 ms max).

Each simulated customer registers and logs in over REST once, places a few orders, then
browses: GraphQL order(id), its order page, `me`, and the REST order, with a little
paying and ordering mixed in. Point it at a running gateway:

    pip install locust
    locust -f bench/locust/mixed.py --host http://127.0.0.1:8080 \
        --headless -u 1000 -r 50 -t 60s

The gateway's per-client rate limit (50/s by default) applies per token; for a load test
start the platform with `--rate-limit-per-second 0`. `tillstream-bench load --scenario
mixed` is the Rust equivalent (reads only, shared customers) used by the suite.
"""

import random
import uuid

from locust import HttpUser, between, task

ORDER = (
    "query($id: ID!) { order(id: $id) { id status totalCents currency "
    "items { sku quantity lineTotalCents } } }"
)
ORDER_SEEN = ORDER.replace("order(id: $id)", "order(id: $id, minVersion: 1)")
ORDERS_PAGE = "{ orders(first: 20) { edges { node { id status totalCents } } } }"
ME = "{ me { id email orderCount } }"
ITEMS = [
    {"sku": "TEA-1", "name": "Green tea", "quantity": 3, "unit_price_cents": 450},
    {"sku": "MUG-2", "name": "Mug", "quantity": 1, "unit_price_cents": 1200},
]
PASSWORD = "a locust customer's password"


class Shopper(HttpUser):
    wait_time = between(0.5, 1.5)

    def on_start(self):
        name = "locust" + uuid.uuid4().hex[:12]
        email = f"{name}@bench.local"
        self.client.post(
            "/api/v1/users",
            json={"email": email, "username": name, "password": PASSWORD, "full_name": "Locust"},
            name="register",
        )
        login = self.client.post(
            "/api/v1/auth/login", json={"email": email, "password": PASSWORD}, name="login"
        )
        self.headers = {"authorization": "Bearer " + login.json()["access_token"]}
        self.orders = []
        for _ in range(3):
            self.place_order()

    def graphql(self, query, variables, name):
        with self.client.post(
            "/graphql",
            json={"query": query, "variables": variables},
            headers=self.headers,
            name=name,
            catch_response=True,
        ) as response:
            if response.status_code != 200 or "errors" in response.json():
                response.failure(response.text[:200])

    @task(4)
    def order(self):
        if self.orders:
            self.graphql(ORDER_SEEN, {"id": random.choice(self.orders)}, "graphql order(id)")

    @task(2)
    def orders_page(self):
        self.graphql(ORDERS_PAGE, {}, "graphql orders page")

    @task(2)
    def me(self):
        self.graphql(ME, {}, "graphql me")

    @task(2)
    def rest_order(self):
        if self.orders:
            # min_version=1: an order placed a moment ago may not be in the read model
            # yet; the gateway waits for it (up to 2 s) instead of answering 404.
            self.client.get(
                f"/api/v1/orders/{random.choice(self.orders)}?min_version=1",
                headers=self.headers,
                name="rest order",
            )

    @task(1)
    def place_order(self):
        response = self.client.post(
            "/api/v1/orders",
            json={"currency": "EUR", "items": ITEMS},
            headers=self.headers,
            name="place order",
        )
        if response.ok:
            self.orders.append(response.json()["id"])

    @task(1)
    def pay_order(self):
        if self.orders:
            order = self.orders.pop(0)
            self.client.post(
                f"/api/v1/orders/{order}/pay",
                json={"payment_reference": "locust", "amount_cents": 2550},
                headers=self.headers,
                name="pay order",
            )
