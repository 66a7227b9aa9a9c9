//! `tillstream events tail`.

use crate::tail::{self, Start};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use tillstream_events::Namespace;
use tillstream_runtime::nats;

#[derive(clap::Subcommand)]
pub enum EventsCommand {
    /// Print events as they arrive on the EVENTS stream (Ctrl-C stops).
    Tail(TailArgs),
}

#[derive(clap::Args)]
pub struct TailArgs {
    /// Only these subjects (e.g. `events.order.*`); default all events.
    #[arg(long)]
    subject: Option<String>,
    /// Start with the first event of the log.
    #[arg(long, conflicts_with = "since")]
    from_start: bool,
    /// Start with events stored at or after this time (RFC 3339).
    #[arg(long)]
    since: Option<DateTime<Utc>>,
    /// Print whole envelopes as JSON lines.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    nats: nats::NatsConfig,
}

pub async fn run(command: EventsCommand) -> anyhow::Result<()> {
    let EventsCommand::Tail(args) = command;
    let start = match (args.from_start, args.since) {
        (true, _) => Start::FromStart,
        (false, Some(time)) => Start::Since(time),
        (false, None) => Start::New,
    };
    let client = args.nats.connect("tillstream-tail", true).await?;
    let namespace = Namespace::new(args.nats.namespace)?;
    let events = tail::follow(client, &namespace, args.subject, start).await?;
    let mut events = std::pin::pin!(events);
    loop {
        let next = tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            next = events.next() => next,
        };
        match next {
            Some(Ok(event)) if args.json => println!("{}", serde_json::to_string(&event)?),
            Some(Ok(event)) => println!(
                "{} {}:{} #{} {} by {}",
                event.occurred_at.to_rfc3339(),
                event.aggregate_type,
                event.aggregate_id,
                event.sequence,
                event.event_type,
                event.metadata.actor.id.as_deref().unwrap_or("anonymous")
            ),
            Some(Err(error)) => eprintln!("skipped: {error}"),
            None => break,
        }
    }
    Ok(())
}
