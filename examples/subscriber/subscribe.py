"""A tillstream stream subscriber outside the Rust code base.

Reads the EVENTS stream from JetStream (an ordered, ephemeral consumer: nothing to clean
up), and checks every event against the published JSON Schemas in contracts/ — the
envelope, then the payload of its event type. Prints one line per event.

    pip install -r examples/subscriber/requirements.txt
    python examples/subscriber/subscribe.py --from-start --count 10

Exits non-zero when an event does not match its schema (or has no schema).
"""

import argparse
import asyncio
import json
import pathlib
import sys

import jsonschema
import nats
from nats.js.api import DeliverPolicy

CONTRACTS = pathlib.Path(__file__).resolve().parents[2] / "contracts" / "events"


def load_schemas():
    schemas = {}
    for path in CONTRACTS.glob("*.schema.json"):
        schemas[path.name.removesuffix(".schema.json")] = json.loads(path.read_text())
    return schemas


async def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nats-url", default="nats://127.0.0.1:4222")
    parser.add_argument("--stream", default="EVENTS")
    parser.add_argument("--subject", default="events.>")
    parser.add_argument("--from-start", action="store_true", help="read the whole log")
    parser.add_argument("--count", type=int, default=0, help="stop after this many events")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the next event")
    args = parser.parse_args()

    schemas = load_schemas()
    envelope = schemas.pop("envelope")
    nc = await nats.connect(args.nats_url)
    js = nc.jetstream()
    policy = DeliverPolicy.ALL if args.from_start else DeliverPolicy.NEW
    sub = await js.subscribe(args.subject, stream=args.stream, ordered_consumer=True, deliver_policy=policy)
    seen = failures = 0
    try:
        while not args.count or seen < args.count:
            try:
                msg = await sub.next_msg(timeout=args.timeout)
            except nats.errors.TimeoutError:
                break
            seen += 1
            try:
                event = json.loads(msg.data)
                jsonschema.validate(event, envelope)
                schema = schemas.get(event["event_type"])
                if schema is None:
                    raise jsonschema.ValidationError(f"no published schema for {event['event_type']}")
                jsonschema.validate(event["payload"], schema)
                print(f"ok    {msg.subject} #{event['sequence']} {event['event_type']}")
            except (ValueError, KeyError, jsonschema.ValidationError) as error:
                failures += 1
                print(f"FAIL  {msg.subject}: {error}", file=sys.stderr)
    finally:
        await nc.close()
    print(f"{seen} events, {failures} not matching their schema")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
