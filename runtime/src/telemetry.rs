//! Tracing and metrics set-up, done once per process. The Prometheus recorder is installed
//! here, so work done while a service builds (the first admin, say) is counted.
//! `RUST_LOG` filters (default `info`); `TILLSTREAM_LOG_FORMAT=json` switches to one JSON
//! object per line.

use std::sync::Once;

use tracing_subscriber::EnvFilter;

static INIT: Once = Once::new();

pub fn init() {
    init_with("info,sqlx::postgres::notice=warn");
}

/// Like [`init`] with another default filter (command-line tools log only warnings).
pub fn init_with(default_filter: &str) {
    crate::ops::prometheus();
    INIT.call_once(|| {
        let filter =
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
        let json = std::env::var("TILLSTREAM_LOG_FORMAT").is_ok_and(|f| f == "json");
        let builder = tracing_subscriber::fmt().with_env_filter(filter);
        let result = if json {
            builder.json().try_init()
        } else {
            builder.try_init()
        };
        // Another subscriber (a test harness) may already be installed; keep it.
        let _ = result;
    });
}
