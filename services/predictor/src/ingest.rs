//! Turning a message from the METRICS stream into a window update.
//!
//! The kind of message comes from its subject (`…metrics.requests.<service>` or
//! `…metrics.resources.<service>`); the service from its body. A message that cannot be
//! read is counted and skipped: metrics are telemetry, one bad producer must not stop the
//! predictor.

use tillstream_events::{RequestMetric, ResourceSample};

use crate::predictor::Predictor;
use crate::window::Windows;

/// What metrics are folded into: the live predictor, or bare windows (a recording).
pub trait MetricSink {
    /// Folds a request in; whether it was accepted.
    fn add_request(&mut self, metric: &RequestMetric) -> bool;
    /// Folds a resource sample in; whether it was accepted.
    fn add_resource(&mut self, sample: &ResourceSample) -> bool;
}

impl MetricSink for Predictor {
    fn add_request(&mut self, metric: &RequestMetric) -> bool {
        Predictor::add_request(self, metric)
    }
    fn add_resource(&mut self, sample: &ResourceSample) -> bool {
        Predictor::add_resource(self, sample)
    }
}

impl MetricSink for Windows {
    fn add_request(&mut self, metric: &RequestMetric) -> bool {
        Windows::add_request(self, metric)
    }
    fn add_resource(&mut self, sample: &ResourceSample) -> bool {
        Windows::add_resource(self, sample)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("subject {0} is neither metrics.requests.* nor metrics.resources.*")]
    Subject(String),
    #[error("cannot decode {kind}: {source}")]
    Decode {
        kind: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

/// Which kind of metric a subject carries.
fn kind(subject: &str) -> Option<&'static str> {
    let mut tokens = subject.rsplit('.');
    let _service = tokens.next()?;
    match (tokens.next()?, tokens.next()?) {
        ("requests", "metrics") => Some("requests"),
        ("resources", "metrics") => Some("resources"),
        _ => None,
    }
}

/// Decodes one message and folds it into `predictor`'s windows. `Ok(false)`: read, but
/// too late (or too far ahead) for any open window.
pub fn ingest(
    predictor: &mut impl MetricSink,
    subject: &str,
    payload: &[u8],
) -> Result<bool, IngestError> {
    match kind(subject) {
        Some("requests") => {
            let metric: RequestMetric =
                serde_json::from_slice(payload).map_err(|source| IngestError::Decode {
                    kind: "RequestMetric",
                    source,
                })?;
            Ok(predictor.add_request(&metric))
        }
        Some(_) => {
            let sample: ResourceSample =
                serde_json::from_slice(payload).map_err(|source| IngestError::Decode {
                    kind: "ResourceSample",
                    source,
                })?;
            Ok(predictor.add_resource(&sample))
        }
        None => Err(IngestError::Subject(subject.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_with_and_without_namespace() {
        assert_eq!(kind("metrics.requests.gateway"), Some("requests"));
        assert_eq!(kind("t-1.metrics.resources.order"), Some("resources"));
        assert_eq!(kind("metrics.other.gateway"), None);
        assert_eq!(kind("gateway"), None);
    }

    #[test]
    fn bad_payload_is_an_error_not_a_panic() {
        let mut p = Predictor::new(Default::default());
        assert!(matches!(
            ingest(&mut p, "metrics.requests.gateway", b"{"),
            Err(IngestError::Decode { .. })
        ));
        assert!(matches!(
            ingest(&mut p, "x.y", b"{}"),
            Err(IngestError::Subject(_))
        ));
    }
}
