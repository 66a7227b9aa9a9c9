//! Stream and subject names.
//!
//! A [`Namespace`] prefixes every name, so several tillstream installations (or several tests)
//! share one NATS server without seeing each other's messages. The default namespace is
//! empty: streams `EVENTS`, subjects `events.<aggregate>.<id>`, exactly as `shared/API.md`
//! publishes them.

/// The prefix of every stream and subject this installation uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Namespace {
    prefix: String,
}

#[derive(Debug, thiserror::Error)]
#[error("namespace `{0}` must be ASCII letters, digits, `_` or `-`")]
pub struct InvalidNamespace(pub String);

impl Namespace {
    /// `prefix` may be empty (the public names) or a token of ASCII letters, digits, `_`, `-`.
    pub fn new(prefix: impl Into<String>) -> Result<Self, InvalidNamespace> {
        let prefix = prefix.into();
        let valid = prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if valid {
            Ok(Namespace { prefix })
        } else {
            Err(InvalidNamespace(prefix))
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn subject(&self, rest: &str) -> String {
        if self.prefix.is_empty() {
            rest.to_owned()
        } else {
            format!("{}.{rest}", self.prefix)
        }
    }

    /// The name of stream `name` (as `nats/streams.json` calls it) in this namespace.
    pub fn stream(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_owned()
        } else {
            format!(
                "{}_{name}",
                self.prefix.to_ascii_uppercase().replace('-', "_")
            )
        }
    }

    /// The stream of record: every committed event.
    pub fn events_stream(&self) -> String {
        self.stream("EVENTS")
    }

    /// `events.>`: every subject of the events stream.
    pub fn events_wildcard(&self) -> String {
        self.subject("events.>")
    }

    /// `events.<aggregate>.<id>`
    pub fn event_subject(&self, aggregate_type: &str, aggregate_id: &str) -> String {
        self.subject(&format!("events.{aggregate_type}.{aggregate_id}"))
    }

    /// `events.dlq.<aggregate>.<id>`: where events no projection could apply are kept.
    pub fn dead_letter_subject(&self, aggregate_type: &str, aggregate_id: &str) -> String {
        self.subject(&format!("events.dlq.{aggregate_type}.{aggregate_id}"))
    }

    /// `metrics.requests.<service>`: one [`crate::RequestMetric`] per request served.
    pub fn request_metrics_subject(&self, service: &str) -> String {
        self.subject(&format!("metrics.requests.{service}"))
    }

    /// `metrics.resources.<service>`: a [`crate::ResourceSample`] every few seconds.
    pub fn resource_metrics_subject(&self, service: &str) -> String {
        self.subject(&format!("metrics.resources.{service}"))
    }

    /// `metrics.>`: everything on the METRICS stream.
    pub fn metrics_wildcard(&self) -> String {
        self.subject("metrics.>")
    }

    /// `autoscale.decisions`: the predictor's [`crate::ScalingDecision`]s.
    pub fn autoscale_decisions_subject(&self) -> String {
        self.subject("autoscale.decisions")
    }

    /// `autoscale.forecasts.<service>`: the predictor's [`crate::LoadForecast`]s for one
    /// service, so the latest per service is the last message on its subject. A character
    /// a subject token may not hold (`.`, `*`, `>`, whitespace, ...) becomes `_`.
    pub fn autoscale_forecast_subject(&self, service: &str) -> String {
        let token: String = service
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let token = if token.is_empty() {
            "_".to_owned()
        } else {
            token
        };
        self.subject(&format!("autoscale.forecasts.{token}"))
    }

    /// `autoscale.forecasts.>`: the forecasts of every service.
    pub fn autoscale_forecasts_wildcard(&self) -> String {
        self.subject("autoscale.forecasts.>")
    }

    /// The name of a durable consumer, unique per namespace.
    pub fn consumer(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{}_{name}", self.prefix)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_namespace_uses_the_public_names() {
        let ns = Namespace::default();
        assert_eq!(ns.events_stream(), "EVENTS");
        assert_eq!(ns.event_subject("order", "42"), "events.order.42");
        assert_eq!(ns.events_wildcard(), "events.>");
        assert_eq!(
            ns.request_metrics_subject("gateway"),
            "metrics.requests.gateway"
        );
        assert_eq!(ns.autoscale_decisions_subject(), "autoscale.decisions");
        assert_eq!(
            ns.autoscale_forecast_subject("order"),
            "autoscale.forecasts.order"
        );
        assert_eq!(
            ns.autoscale_forecast_subject("a.b *>"),
            "autoscale.forecasts.a_b___",
            "no service name can leave its subject token"
        );
        assert_eq!(ns.autoscale_forecast_subject(""), "autoscale.forecasts._");
    }

    #[test]
    fn prefixed_namespace_isolates_names() {
        let ns = Namespace::new("t-1a").unwrap();
        assert_eq!(ns.events_stream(), "T_1A_EVENTS");
        assert_eq!(ns.event_subject("user", "7"), "t-1a.events.user.7");
        assert!(Namespace::new("a.b").is_err());
        assert!(Namespace::new("a*").is_err());
    }
}
